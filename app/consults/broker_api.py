"""JSON API of the media broker under ``/api/v1/consults``: recording consent, recording start/stop, the
recordings list and playback, invite links, the participants panel and removing a participant.

Routes hang on the consult API blueprint (imported at the end of :mod:`app.consults.api`), which commits at the
request boundary (before a recording streams out).
"""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from flask_login import current_user, login_required
from marshmallow import Schema, fields, validate

from app import web
from app.consults import invites, recordings
from app.consults import service as consults
from app.consults.api import blp


class InviteLinkSchema(Schema):
    kind = fields.Str(required=True, validate=validate.OneOf(["interpreter", "family"]))
    display_name = fields.Str(required=True, validate=validate.Length(min=1, max=120))
    minutes = fields.Int(load_default=invites.DEFAULT_MINUTES,
                         validate=validate.Range(min=1, max=invites.MAX_MINUTES))


def _appointment(appointment_id: int) -> Any:
    return consults.get_appointment(appointment_id, by=current_user, audit_read=False)


def _json(body: Any, status: int = 200) -> Response:
    import json

    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


@blp.route("/appointments/<int:appointment_id>/recording", methods=["GET"])
@blp.alt_response(200, description="Recording state and consent", success=True)
@login_required
def recording_status(appointment_id: int) -> Response:
    """Consent and recording state of a consult (and, for the doctor and the patient, its recordings)."""
    appointment = _appointment(appointment_id)
    body = recordings.status(appointment, by=current_user)
    return _json(body)


@blp.route("/appointments/<int:appointment_id>/recording/consent", methods=["POST"])
@blp.alt_response(201, description="Consent recorded", success=True)
@login_required
def give_consent(appointment_id: int) -> Response:
    """The patient (or their clinic, on their behalf) consents to this consult being recorded."""
    appointment = _appointment(appointment_id)
    consent = recordings.give_consent(appointment, by=current_user)
    return _json({"consent_id": consent.id, "given_at": consent.given_at.isoformat()}, 201)


@blp.route("/appointments/<int:appointment_id>/recording/consent/revoke", methods=["POST"])
@blp.alt_response(200, description="Consent revoked (or none to revoke)", success=True)
@login_required
def revoke_consent(appointment_id: int) -> Response:
    """Withdraw consent; a running recording stops."""
    appointment = _appointment(appointment_id)
    consent = recordings.revoke_consent(appointment, by=current_user)
    return _json({"consent_id": consent.id if consent else None, "revoked": consent is not None})


@blp.route("/appointments/<int:appointment_id>/recording/start", methods=["POST"])
@blp.alt_response(201, description="Recording started", success=True)
@login_required
def recording_start(appointment_id: int) -> Response:
    """Start recording (the doctor; needs the patient's consent; moves the consult to the relay)."""
    appointment = _appointment(appointment_id)
    row = recordings.start(appointment, by=current_user)
    body = {"id": row.id, "state": "started"}
    return _json(body, 201)


@blp.route("/appointments/<int:appointment_id>/recording/stop", methods=["POST"])
@blp.alt_response(200, description="Recording stopped", success=True)
@login_required
def recording_stop(appointment_id: int) -> Response:
    """Stop recording (the doctor): the encrypted file is stored and listed with the encounter."""
    appointment = _appointment(appointment_id)
    row = recordings.stop(appointment, by=current_user)
    body = {"id": row.id, "state": "stopped", "status": row.status.value, "duration": row.duration,
            "size": row.size, "sha256": row.sha256}
    return _json(body)


@blp.route("/appointments/<int:appointment_id>/recordings", methods=["GET"])
@blp.alt_response(200, description="The consult's recordings", success=True)
@login_required
def recording_list(appointment_id: int) -> Response:
    """Stored recordings of a consult (the treating doctor and the patient only)."""
    appointment = _appointment(appointment_id)
    rows = recordings.list_recordings(appointment, by=current_user)
    return _json([recordings.recording_json(r) for r in rows])


@blp.route("/recordings/<int:recording_id>/media", methods=["GET"])
@blp.alt_response(200, description="The whole recording", content_type="video/webm", success=True)
@blp.alt_response(206, description="The byte range asked for", content_type="video/webm", success=True)
@blp.alt_response(416, description="The byte range is outside the recording", success=True)
@login_required
def recording_media(recording_id: int) -> Response:
    """Play a recording: the decrypted WebM, streamed, with byte ranges for seeking (the treating doctor and the
    patient; every request audited)."""
    row = recordings.get_for_playback(recording_id, by=current_user)
    lay = recordings.layout(row)
    response = web.byte_range_response(lay.size, lambda: recordings.plaintext(row),
                                       lambda a, b: recordings.plaintext_range(row, lay, a, b), mimetype="video/webm",
                                       headers={"Cache-Control": "no-store", "Content-Disposition": "inline"})
    return response


@blp.route("/appointments/<int:appointment_id>/invite-links", methods=["POST"])
@blp.alt_response(201, description="A single-use guest link", success=True)
@blp.arguments(InviteLinkSchema)
@login_required
def invite_link(data: dict[str, Any], appointment_id: int) -> Response:
    """Make a single-use link for an interpreter or family member (the doctor); the link is shown once."""
    appointment = _appointment(appointment_id)
    invite, token = invites.create_invite(appointment, by=current_user, **data)
    body = {"id": invite.id, "kind": invite.kind.value, "display_name": invite.display_name,
            "expires_at": invite.expires_at.isoformat(),
            "url": url_for("consults.invite_redeem", token=token, _external=True)}
    return _json(body, 201)


@blp.route("/appointments/<int:appointment_id>/participants", methods=["GET"])
@blp.alt_response(200, description="Who is in the consult", success=True)
@login_required
def participant_list(appointment_id: int) -> Response:
    """Who is in the consult, and the invite links (the doctor)."""
    appointment = _appointment(appointment_id)
    body = invites.participants(appointment, by=current_user)
    return _json(body)


@blp.route("/appointments/<int:appointment_id>/participants/<int:user_id>/remove", methods=["POST"])
@blp.alt_response(204, description="Removed", success=True)
@login_required
def participant_remove(appointment_id: int, user_id: int) -> Response:
    """Remove someone from the consult (the doctor): they cannot rejoin, their relay connection is dropped."""
    appointment = _appointment(appointment_id)
    invites.remove(appointment, user_id=user_id, by=current_user)
    return Response(status=204)

