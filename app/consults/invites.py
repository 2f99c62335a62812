"""Guests and participants: single-use invite links for an interpreter or family member, the guest's fence,
and removing someone from a consult.

A redeemed link creates a **guest account** (role ``guest``, no password, no patient link) that is a
participant of that one consult. Reusing the consult's join/signal/chat code keeps a guest's rights exactly
those of any participant; :func:`guard` fences the account to that consult's room page and its media/chat
API (everything else is an audited 404), and deactivates it when the consult ends or the doctor removes them.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.catalogue import N_
from app.consults import access, media, signals
from app.consults import service as consults
from app.consults.models import (
    Appointment,
    AppointmentStatus,
    ConsultInvite,
    ConsultParticipant,
    InviteKind,
    ParticipantKind,
)
from app.errors import Conflict, ValidationFailed

#: Not an argon2 hash, so no password ever verifies: a guest can only come in through the link.
NO_PASSWORD = "!guest-no-password"  # noqa: S105
MAX_MINUTES = 240
DEFAULT_MINUTES = 30
#: API endpoints a guest may call, and only for their own consult.
GUEST_API = {"token", "join", "relay_join", "relay_leave", "relay_switch", "leave", "send_signal", "receive_signals",
             "events", "Chat", "state", "recording_status"}
#: What a removed guest may still call: enough to read the "removed" signal addressed to them.
REMOVED_API = {"consults_api.events", "consults_api.receive_signals", "consults_api.state"}
#: Where the room page sends people who leave: a guest gets a page to rejoin instead.
GUEST_LANDING = {"web.home", "consults.index"}
GUEST_PAGES = {"consults.room", "consults.waiting"}
GUEST_ALWAYS = {"static", "consults.static", "auth.sign_out", "consults.invite_redeem", "auth_api.CsrfToken"}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invite(appointment: Appointment, *, by: User, kind: str, display_name: str,
                  minutes: int = DEFAULT_MINUTES) -> tuple[ConsultInvite, str]:
    """The doctor makes a single-use link; returns the row and the token (shown once, stored hashed).

    :raises NotFound: not the doctor (audited). :raises ValidationFailed: bad kind/name/expiry.
    :raises Conflict: the consult is over.
    """
    if by.id != appointment.doctor_id:
        access.refuse("consult.invite_link", by, appointment.id, appointment.patient_id)
    if kind not in InviteKind._value2member_map_:
        raise ValidationFailed(N_("Some fields need attention."), errors={"kind": [N_("Interpreter or family.")]})
    name = (display_name or "").strip()
    if not name or len(name) > 120 or any(ord(c) < 32 for c in name):
        raise ValidationFailed(N_("Some fields need attention."), errors={"display_name": [N_("Give a short name.")]})
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValidationFailed(N_("Some fields need attention."),
                               errors={"minutes": [gettext("Between 1 and %(limit)d minutes.", limit=MAX_MINUTES)]})
    if not appointment.status.is_open:
        raise Conflict("This consult is over.")
    token = secrets.token_urlsafe(32)
    invite = ConsultInvite(appointment_id=appointment.id, kind=InviteKind(kind), display_name=name,
                           token_hash=_hash(token), created_by_id=by.id,
                           expires_at=db.utcnow() + timedelta(minutes=minutes))
    db.session.add(invite)
    db.session.flush()
    audit.record("consult.invite_link", by=by, patient_id=appointment.patient_id, resource_type="ConsultInvite",
                 resource_id=invite.id, detail={"kind": kind, "minutes": minutes})
    return invite, token


def find_invite(token: str) -> ConsultInvite | None:
    return db.session.scalar(sa.select(ConsultInvite).where(ConsultInvite.token_hash == _hash(token or "")))


def invite_problem(invite: ConsultInvite | None) -> str | None:
    """Why a link cannot be used (a friendly sentence), or None when it can."""
    if invite is None:
        return "This invitation link is not valid. Ask the doctor for a new one."
    if invite.used_at is not None:
        return "This invitation link has already been used. Each link works once; ask the doctor for a new one."
    if invite.expires_at <= db.utcnow():
        return "This invitation link has expired. Ask the doctor for a new one."
    appointment = db.session.get(Appointment, invite.appointment_id)
    if appointment is None or appointment.status is not AppointmentStatus.ARRIVED \
            or (appointment.session is not None and appointment.session.ended_at is not None):
        return "This consult is not running (it has ended or not started yet)."
    return None


def redeem(token: str) -> User | str:
    """Use a link once: create the guest account and add it to the consult. Returns the guest, or the
    friendly reason it was refused (audited either way)."""
    invite = find_invite(token)
    problem = invite_problem(invite)
    if problem is None:
        assert invite is not None
        # Atomic claim: of two simultaneous uses, exactly one updates the row.
        claimed = db.session.execute(sa.update(ConsultInvite).where(
            ConsultInvite.id == invite.id, ConsultInvite.used_at.is_(None))
            .values(used_at=db.utcnow()).execution_options(synchronize_session=False)).rowcount
        if claimed != 1:
            problem = "This invitation link has already been used. Each link works once; ask the doctor for a new one."
    appointment = db.session.get(Appointment, invite.appointment_id) if invite is not None else None
    if problem is not None:
        audit.record("consult.invite_redeem", by=None, actor_name="guest link", outcome=Outcome.DENIED,
                     patient_id=appointment.patient_id if appointment else None, resource_type="ConsultInvite",
                     resource_id=invite.id if invite else None, detail={"why": problem.split(".")[0]})
        return problem
    assert invite is not None and appointment is not None and appointment.session is not None
    doctor = db.session.get(User, appointment.doctor_id)
    assert doctor is not None
    label = "interpreter" if invite.kind is InviteKind.INTERPRETER else "family"
    guest = User(email=f"guest-{invite.id}-{secrets.token_hex(6)}@guest.invalid",
                 full_name=f"{invite.display_name} ({label})", password_hash=NO_PASSWORD,
                 role=Role.GUEST, facility_id=doctor.facility_id)
    db.session.add(guest)
    db.session.flush()
    invite.guest_user_id = guest.id
    appointment.session.participants.append(ConsultParticipant(user_id=guest.id, kind=ParticipantKind.GUEST,
                                                               invited_by_id=invite.created_by_id))
    db.session.flush()
    audit.record("consult.invite_redeem", by=guest, patient_id=appointment.patient_id,
                 resource_type="ConsultInvite", resource_id=invite.id, detail={"kind": invite.kind.value})
    return guest


def guest_appointment(guest: User) -> Appointment | None:
    invite = db.session.scalar(sa.select(ConsultInvite).where(ConsultInvite.guest_user_id == guest.id))
    return db.session.get(Appointment, invite.appointment_id) if invite is not None else None


def _guest_standing(guest: User, appointment: Appointment | None) -> str:
    """"in", "removed" (may still read the signal that says so) or "ended"."""
    if appointment is None or appointment.session is None or appointment.session.ended_at is not None \
            or appointment.status is not AppointmentStatus.ARRIVED:
        return "ended"
    participant = consults.participant_of(appointment, guest)
    if participant is None:
        return "ended"
    return "in" if participant.removed_at is None else "removed"


def end_guest(guest: User, *, reason: str) -> None:
    """Deactivate a guest account: every browser session of it ends (the user loader refuses inactive users)."""
    if guest.active:
        guest.active = False
        guest.session_epoch += 1
        audit.record("consult.guest_end", by=guest, resource_type="User", resource_id=guest.id,
                     detail={"reason": reason})


def guard(user: User, endpoint: str | None, view_args: dict[str, Any]) -> str | None:
    """For a guest: None if this request is inside their fence, else why not: "outside", "ended", or "left"
    (they left the room page and landed where other users start)."""
    if endpoint in GUEST_ALWAYS:
        return None
    appointment = guest_appointment(user)
    standing = _guest_standing(user, appointment)
    if standing == "ended":
        return "ended"
    assert appointment is not None
    own = view_args.get("appointment_id") == appointment.id
    if standing == "removed":
        return None if own and endpoint in REMOVED_API else "ended"
    if endpoint in GUEST_LANDING:
        return "left"
    if endpoint in GUEST_PAGES and own:
        return None
    if endpoint and endpoint.startswith("consults_api.") and endpoint.split(".", 1)[1] in GUEST_API and own:
        return None
    return "outside"


# ---------------------------------------------------------------- participants


def participants(appointment: Appointment, *, by: User) -> dict[str, Any]:
    """Who is in the consult and the open invite links (the doctor's participants panel).

    :raises NotFound: not the doctor (audited).
    """
    if by.id != appointment.doctor_id:
        access.refuse("consult.participants", by, appointment.id, appointment.patient_id)
    session = appointment.session
    people = [] if session is None else [
        {"user_id": p.user_id, "name": p.user.full_name, "kind": p.kind.value, "present": p.present,
         "removed": p.removed_at is not None, "can_remove": p.kind is not ParticipantKind.DOCTOR
         and p.removed_at is None} for p in session.participants]
    invites = db.session.scalars(sa.select(ConsultInvite).where(ConsultInvite.appointment_id == appointment.id)
                                 .order_by(ConsultInvite.id)).all()
    now = db.utcnow()
    return {"participants": people, "invites": [
        {"id": i.id, "kind": i.kind.value, "display_name": i.display_name, "expires_at": i.expires_at.isoformat(),
         "state": "used" if i.used_at else ("expired" if i.expires_at <= now else "open")} for i in invites]}


def remove(appointment: Appointment, *, user_id: int, by: User) -> ConsultParticipant:
    """The doctor removes someone: their joins are refused from now on, the media worker drops their relay
    connection, they get a ``removed`` signal and everyone else a ``bye`` (reason ``removed``).

    :raises NotFound: not the doctor (audited). :raises ValidationFailed: not a removable participant.
    """
    if by.id != appointment.doctor_id:
        access.refuse("consult.remove", by, appointment.id, appointment.patient_id)
    session = appointment.session
    target = db.session.get(User, user_id)
    participant = consults.participant_of(appointment, target) if target is not None else None
    if session is None or participant is None or participant.kind is ParticipantKind.DOCTOR:
        raise ValidationFailed(N_("Some fields need attention."),
                               errors={"user_id": [N_("Not a removable participant.")]})
    assert target is not None
    if participant.removed_at is None:
        now = db.utcnow()
        participant.removed_at = now
        if participant.joined_at is not None and participant.left_at is None:
            participant.left_at = now
        signals.send(session, by, "removed", {"reason": "removed"}, recipient_id=target.id)
        signals.send(session, target, "bye", {"reason": "removed", "user_id": target.id})
        if session.media_mode == "relay" and session.media_worker:
            media.call(session.media_worker, "POST", f"/relay/{media.relay_room(session)}/leave",
                       {"participant_id": str(target.id)}, ok=(200, 404))
        audit.record("consult.remove", by=by, patient_id=appointment.patient_id, resource_type="ConsultSession",
                     resource_id=session.id, detail={"user_id": target.id})
    return participant
