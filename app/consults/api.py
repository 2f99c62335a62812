"""JSON API for consults under ``/api/v1/consults``: slots, booking, waiting room, signaling, chat, echo test.

Signaling is plain HTTP: ``POST .../signals`` to send, and either ``GET .../signals?after=N`` (polling) or
``GET .../events`` (Server-Sent Events) to receive. State lives in the database (and Redis when configured),
so any gunicorn worker can serve any request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request, stream_with_context
from flask.views import MethodView
from flask_limiter import RequestLimit
from flask_login import current_user, login_required
from flask_smorest import Blueprint

from app import db
from app.api import DB_ID_MAX
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import bearer
from app.auth.models import Role, User
from app.catalogue import N_
from app.consults import access, media, recordings, service, wake
from app.consults.models import Appointment, AvailabilityException, ChatMessage, Encounter
from app.consults.schemas import (
    AppointmentSchema,
    AvailabilitySchema,
    CancelSchema,
    ChatSchema,
    EncounterSchema,
    ExceptionSchema,
    InviteSchema,
    NoteSchema,
    OfferSchema,
    RelayOfferSchema,
    RelaySwitchSchema,
    RescheduleSchema,
    SignalArgsSchema,
    SignalSchema,
    SlotArgsSchema,
    SlotSchema,
    TokenSchema,
)
from app.errors import NotFound
from app.extensions import limiter
from app.patients import service as patients

blp = Blueprint("consults_api", __name__, url_prefix="/api/v1/consults", description="Video consults")
bearer.declare(blp, "Appointment")  # the recording and guest routes of broker_api too

STREAM_SECONDS = 25
RETRY_MS = 250  # a stream ends every STREAM_SECONDS; the browser is back this soon (news waits in the database)


@blp.route("/doctors/<int:doctor_id>/slots")
@blp.arguments(SlotArgsSchema, location="query")
@blp.response(200, SlotSchema(many=True))
@login_required
def slots(args: dict[str, Any], doctor_id: int) -> list[service.Slot]:
    """Free slots of a doctor over the next days."""
    doctor = db.session.get(User, doctor_id)
    if doctor is None or doctor.role is not Role.DOCTOR or not doctor.active:
        raise NotFound("No doctor with that id.")
    return service.open_slots(doctor, days=args["days"])


@blp.route("/availability")
class AvailabilityList(MethodView):
    decorators = [login_required]

    @blp.response(200, AvailabilitySchema(many=True))
    def get(self) -> list[Any]:
        """Your weekly windows (doctors)."""
        return list(service.windows_for(current_user))

    @blp.arguments(AvailabilitySchema)
    @blp.response(201, AvailabilitySchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Publish a weekly window of consult slots, in wall-clock times of its zone."""
        window = service.publish_availability(by=current_user, **data)
        return window


@blp.route("/availability/exceptions")
@blp.arguments(ExceptionSchema)
@blp.response(201, ExceptionSchema)
@login_required
def add_exception(data: dict[str, Any]) -> AvailabilityException:
    """Block a period in which you take no consults."""
    exc = service.add_exception(by=current_user, **data)
    return exc


@blp.route("/appointments")
class Appointments(MethodView):
    decorators = [login_required]

    @blp.response(200, AppointmentSchema(many=True))
    def get(self) -> list[Appointment]:
        """Your upcoming appointments."""
        rows = list(service.list_for(current_user))
        return rows

    @blp.arguments(AppointmentSchema)
    @blp.response(201, AppointmentSchema)
    def post(self, data: dict[str, Any]) -> Appointment:
        """Book a slot (the patient, or clinic staff for a patient of their clinic)."""
        patient = patients.get_patient(data["patient_id"], by=current_user, action="appointment.create",
                                       audit_read=False)
        appointment = service.book(patient=patient, doctor_id=data["doctor_id"], start=data["start_at"],
                                   by=current_user, reason=data["reason"])
        return appointment


def _appointment(appointment_id: int, *, audit_read: bool = False) -> Appointment:
    return service.get_appointment(appointment_id, by=current_user, audit_read=audit_read)


def _sender_in_consult() -> str:
    """Messages are counted per consult and sender: one participant's flood never slows the others."""
    return f"consult:{(request.view_args or {}).get('appointment_id')}:{current_user.get_id()}"


def _message_rate() -> str:
    return f"{current_app.config['SIGNAL_RATE_LIMIT']} per {service.RATE_WINDOW_SECONDS} seconds"


def _messages_limit(action: str, message: str) -> Any:
    """Signals and chat lines share one budget per consult and sender; a flood is refused (429) and audited."""

    def audit_flood(_limit: RequestLimit) -> None:
        appointment = db.session.get(Appointment, (request.view_args or {}).get("appointment_id"))
        session = appointment.session if appointment is not None else None
        audit.record(action, by=current_user, outcome=Outcome.DENIED,
                     patient_id=appointment.patient_id if appointment is not None else None,
                     resource_type="ConsultSession", resource_id=session.id if session is not None else None,
                     detail={"why": "rate limit"})

    return limiter.shared_limit(_message_rate, scope="consult-messages", key_func=_sender_in_consult,
                                error_message=message, on_breach=audit_flood)


@blp.route("/appointments/<int:appointment_id>")
@blp.response(200, AppointmentSchema)
@login_required
def get_appointment(appointment_id: int) -> Appointment:
    """One appointment."""
    appointment = _appointment(appointment_id, audit_read=True)
    return appointment


def _action(name: str, fn: Any, schema: type | None = None, response: type = AppointmentSchema,
            doc: str = "") -> None:
    def view(*args: Any, appointment_id: int) -> Any:
        data = args[0] if args else {}
        appointment = _appointment(appointment_id)
        result = fn(appointment, by=current_user, **data)
        return result

    view.__name__ = name.replace("-", "_")
    view.__doc__ = doc
    wrapped: Any = login_required(view)
    wrapped = blp.response(200, response)(wrapped)
    if schema is not None:
        wrapped = blp.arguments(schema)(wrapped)
    blp.route(f"/appointments/<int:appointment_id>/{name}", methods=["POST"], endpoint=view.__name__)(wrapped)


_action("cancel", service.cancel, CancelSchema, doc="Cancel and free the slot.")
_action("reschedule", service.reschedule, RescheduleSchema, doc="Move to another open slot.")
_action("check-in", service.check_in, doc="Check in to the virtual waiting room (from 15 minutes before).")
_action("admit", service.admit, response=EncounterSchema, doc="Admit the waiting patient (the doctor).")
_action("noshow", service.mark_noshow, doc="Record that the patient did not come.")
_action("note", service.save_note, NoteSchema, EncounterSchema, doc="Save the consult note (the doctor).")
_action("end", service.end_consult, NoteSchema, EncounterSchema,
        doc="End the consult: appointment fulfilled, encounter finished.")


@blp.route("/appointments/<int:appointment_id>/state")
@blp.alt_response(200, description="Where the consult stands", success=True)
@login_required
def state(appointment_id: int) -> Response:
    """Where the consult stands: what the waiting room shows."""
    appointment = _appointment(appointment_id)
    return Response(json.dumps(service.state(appointment)), mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


@blp.route("/appointments/<int:appointment_id>/token", methods=["POST"])
@blp.alt_response(200, description="A join token", success=True)
@login_required
def token(appointment_id: int) -> dict[str, str]:
    """A fresh join token (single use, short-lived, bound to this consult and you)."""
    appointment = _appointment(appointment_id)
    value = service.issue_join_token(appointment, by=current_user)
    return {"token": value}


@blp.route("/appointments/<int:appointment_id>/join", methods=["POST"])
@blp.alt_response(200, description="Your ICE servers and who else is in", success=True)
@blp.arguments(TokenSchema)
@login_required
def join(data: dict[str, Any], appointment_id: int) -> dict[str, Any]:
    """Enter the consult; returns your ICE servers (with time-limited TURN credentials)."""
    appointment = _appointment(appointment_id)
    participant = service.join(appointment, token=data["token"], by=current_user, since=data["since"])
    kind, after = participant.kind.value, participant.joined_signal_id
    db.session.commit()
    # Read presence after our commit: of two people joining at once, the later one sees the other.
    db.session.expire_all()
    session = appointment.session
    assert session is not None
    others = [{"user_id": p.user_id, "kind": p.kind.value, "name": p.user.full_name, "present": p.present}
              for p in session.participants if p.user_id != current_user.id]
    return {"user_id": current_user.id, "kind": kind, "after": after, "media_mode": session.media_mode,
            "ice_servers": service.ice_servers(current_user), "participants": others}


@blp.route("/appointments/<int:appointment_id>/relay", methods=["POST"])
@blp.alt_response(200, description="The media service's SDP answer", success=True)
@blp.arguments(RelayOfferSchema)
@login_required
def relay_join(data: dict[str, Any], appointment_id: int) -> dict[str, Any]:
    """Relay mode: send your complete SDP offer (own media plus one recvonly audio+video pair per further
    participant; ``restart`` for a new peer connection); returns the media service's answer, which m-line
    carries whom, and the participants' names for the tiles."""
    appointment = _appointment(appointment_id)
    session = service.relay_join(appointment, by=current_user)
    service.validate_sdp(data["sdp"])
    worker = media.pin_worker(session.id)
    names = service.relay_names(appointment, by=current_user)
    db.session.commit()  # the relay mode and pinned worker are saved before the media service is called
    body = {"participant_id": str(current_user.id), "sdp": data["sdp"], "type": "offer",
            "restart": data["restart"]}
    try:
        answer = media.relay_call(worker, f"/relay/consult-{session.id}/join", body)
    except media.MediaUnreachable:  # the worker died: the consult moves to one that answers
        worker = recordings.fail_over(session, failed=worker, by=current_user)
        db.session.commit()  # the move to the new worker is saved before it is called
        answer = media.relay_call(worker, f"/relay/consult-{session.id}/join", body)
    return {"sdp": answer.get("sdp"), "type": "answer", "tracks": answer.get("tracks", []),
            "missing": answer.get("missing", 0), "mode": "relay", "participants": names}


@blp.route("/appointments/<int:appointment_id>/relay/switch", methods=["POST"])
@blp.alt_response(200, description="The consult is on the relay", success=True)
@blp.arguments(RelaySwitchSchema)
@login_required
def relay_switch(data: dict[str, Any], appointment_id: int) -> dict[str, str]:
    """Peer to peer did not connect in time: move the consult to the relay; the other pages get a ``mode``
    signal and follow."""
    appointment = _appointment(appointment_id)
    service.switch_to_relay(appointment, by=current_user, reason=data["reason"])
    return {"mode": "relay", "reason": data["reason"]}


@blp.route("/appointments/<int:appointment_id>/relay/leave", methods=["POST"])
@blp.alt_response(204, description="Left the relay", success=True)
@login_required
def relay_leave(appointment_id: int) -> Response:
    """Leave relay mode: the media service drops your peer connection."""
    appointment = _appointment(appointment_id)
    participant = service.participant_of(appointment, current_user)
    if participant is None or appointment.session is None:
        access.refuse("consult.relay_leave", current_user, appointment.id, appointment.patient_id)
    media.relay_call(media.pin_worker(appointment.session.id), f"/relay/consult-{appointment.session.id}/leave",
                     {"participant_id": str(current_user.id)}, ok=(200, 404))  # 404: already gone
    audit.record("consult.relay_leave", by=current_user, patient_id=appointment.patient_id,
                 resource_type="ConsultSession", resource_id=appointment.session.id)
    return Response(status=204)


@blp.route("/appointments/<int:appointment_id>/leave", methods=["POST"])
@blp.alt_response(204, description="Left the consult", success=True)
@login_required
def leave(appointment_id: int) -> Response:
    """Leave the consult (you can rejoin while it lasts)."""
    appointment = _appointment(appointment_id)
    service.leave(appointment, by=current_user)
    return Response(status=204)


@blp.route("/appointments/<int:appointment_id>/signals", methods=["POST"])
@blp.alt_response(201, description="The message id", success=True)
@blp.arguments(SignalSchema)
@login_required
@_messages_limit("consult.signal", N_("Too many signaling messages; slow down."))
def send_signal(data: dict[str, Any], appointment_id: int) -> tuple[dict[str, int], int]:
    """Send an SDP offer/answer, an ICE candidate, or bye to the other participants."""
    appointment = _appointment(appointment_id)
    to = data.pop("to")
    kind = data.pop("kind")
    message = service.post_signal(appointment, by=current_user, kind=kind, payload=data, to=to)
    return {"id": message.id}, 201


@blp.route("/appointments/<int:appointment_id>/signals", methods=["GET"])
@blp.alt_response(200, description="Messages for you", success=True)
@blp.arguments(SignalArgsSchema, location="query")
@login_required
def receive_signals(args: dict[str, Any], appointment_id: int) -> Response:
    """Messages for you newer than ``after`` (polling)."""
    appointment = _appointment(appointment_id)
    items = service.pending_signals(appointment, by=current_user, after=args["after"])
    return Response(json.dumps(items), mimetype="application/json", headers={"Cache-Control": "no-store"})


@blp.route("/appointments/<int:appointment_id>/events")
@blp.alt_response(200, description="A stream of signaling messages", content_type="text/event-stream", success=True)
@login_required
def events(appointment_id: int) -> Response:
    """Server-Sent Events: signaling messages as they arrive (the browser reconnects with Last-Event-ID)."""
    appointment = _appointment(appointment_id)
    service.pending_signals(appointment, by=current_user, after=2**62)  # authorises; audited if refused
    user_id = current_user.id
    after = request.headers.get("Last-Event-ID", request.args.get("after", "0"))
    after_id = min(int(after), DB_ID_MAX) if after.isascii() and after.isdigit() else 0
    db.session.commit()  # the request's work is saved before the long stream starts
    channel = current_app.config["REDIS_URL"] or str(db.session.get_bind().url.render_as_string(hide_password=False))
    session_id = appointment.session.id if appointment.session else 0

    def stream() -> Iterator[str]:
        nonlocal after_id
        deadline = time.monotonic() + STREAM_SECONDS
        # Listen before the first read, so news committed in between wakes the first wait at once.
        with wake.listen(session_id, channel=channel) as listener:
            yield f"retry: {RETRY_MS}\n\n"
            while time.monotonic() < deadline:
                user = db.session.get(User, user_id)
                appt = db.session.get(Appointment, appointment_id)
                assert user is not None and appt is not None
                items = service.pending_signals(appt, by=user, after=after_id)
                db.session.commit()  # each poll saves its audit and ends its transaction while the stream runs
                db.session.close()
                for item in items:
                    after_id = item["id"]
                    yield f"id: {item['id']}\nevent: signal\ndata: {json.dumps(item)}\n\n"
                listener.wait(deadline - time.monotonic())
                yield ": keep-alive\n\n"

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@blp.route("/appointments/<int:appointment_id>/chat")
class Chat(MethodView):
    decorators = [login_required]

    @blp.response(200, ChatSchema(many=True))
    def get(self, appointment_id: int) -> list[ChatMessage]:
        """The consult's chat so far."""
        appointment = _appointment(appointment_id, audit_read=True)
        return list(service.chat_history(appointment))

    @blp.arguments(ChatSchema)
    @blp.response(201, ChatSchema)
    @_messages_limit("consult.chat", N_("Too many messages; slow down."))
    def post(self, data: dict[str, Any], appointment_id: int) -> ChatMessage:
        """Send a chat message (kept with the encounter)."""
        appointment = _appointment(appointment_id)
        message = service.post_chat(appointment, by=current_user, body=data["body"])
        return message


@blp.route("/appointments/<int:appointment_id>/invite", methods=["POST"])
@blp.alt_response(201, description="The invited user", success=True)
@blp.arguments(InviteSchema)
@login_required
def invite(data: dict[str, Any], appointment_id: int) -> tuple[dict[str, int], int]:
    """Invite a staff colleague into the consult (the doctor)."""
    appointment = _appointment(appointment_id)
    participant = service.invite(appointment, user_id=data["user_id"], by=current_user)
    return {"user_id": participant.user_id}, 201


@blp.route("/encounters/<int:encounter_id>")
@blp.response(200, EncounterSchema)
@login_required
def encounter(encounter_id: int) -> Encounter:
    """A consult's encounter record (notes, diagnosis)."""
    row = db.session.get(Encounter, encounter_id)
    if row is None:
        audit.forbid("encounter.read", by=current_user, resource_type="Encounter", resource_id=encounter_id)
    _appointment(row.appointment_id, audit_read=True)
    return row


@blp.route("/echo/offer", methods=["POST"])
@blp.alt_response(200, description="The media service's SDP answer", success=True)
@blp.arguments(OfferSchema)
@login_required
def echo_offer(data: dict[str, Any]) -> dict[str, Any]:
    """Pre-call device test: the media service sends your camera and microphone straight back."""
    service.validate_sdp(data["sdp"])
    answer = media.echo_offer(data["sdp"])
    audit.record("consult.echo_test", by=current_user, resource_type="EchoTest")
    return answer


