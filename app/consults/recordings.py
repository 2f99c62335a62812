"""Recording rules: consent, recording start/stop on the consult's pinned media worker
(:mod:`app.consults.media`), playback.

- Nothing is recorded without the patient's active :class:`RecordingConsent`; its id goes to the media worker,
  which writes it into the encrypted file. Revoking consent while recording stops the recording.
- Only the treating doctor and the patient may play a recording; everyone else gets an audited 404.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app

import storage
from app import db
from app.audit import service as audit
from app.auth.models import Role, User
from app.consults import access, media, signals
from app.consults.models import (
    Appointment,
    AppointmentStatus,
    ConsultRecording,
    ConsultSession,
    RecordingConsent,
    RecordingStatus,
)
from app.errors import Conflict, Forbidden, NotFound
from storage import recording_format

#: ``stop_reason`` of a recording whose media worker died while it ran: it ended early.
WORKER_FAILED = "media worker failed"


def fail_over(session: ConsultSession, *, failed: str, by: User) -> str:
    """The consult's media worker does not answer: pin the consult to another configured worker that does,
    with a conditional UPDATE (racing app workers agree on one), and close the recording that ran on the dead
    worker as ended early. Participants then reconnect to the new worker. Flushed, not committed.

    :raises MediaUnreachable: no other worker answers either.
    """
    if media.answers(failed):  # back already (restarted): stay
        return failed
    for candidate in (w for w in media.configured_workers() if w != failed):
        if not media.answers(candidate):
            continue
        db.session.execute(sa.update(ConsultSession).where(ConsultSession.id == session.id,
                                                           ConsultSession.media_worker == failed)
                           .values(media_worker=candidate).execution_options(synchronize_session=False))
        db.session.refresh(session, ["media_worker"])
        appointment = db.session.get(Appointment, session.appointment_id)
        assert appointment is not None
        lost = running_recording(appointment)
        if lost is not None and lost.media_worker == failed:
            lost.status, lost.stopped_at, lost.stop_reason = RecordingStatus.FAILED, db.utcnow(), WORKER_FAILED
            signals.send(session, by, "recording", {"state": "stopped", "reason": WORKER_FAILED})
        audit.record("consult.media_fail_over", by=by, patient_id=appointment.patient_id,
                     resource_type="ConsultSession", resource_id=session.id,
                     detail={"from": failed, "to": session.media_worker})
        return session.media_worker or candidate
    raise media.MediaUnreachable("The consult cannot reach the media service. Try again shortly.")


def settle_interrupted(appointment: Appointment) -> None:
    """A recording cut short by its worker's death is finished by that worker when it starts again (the
    file up to the fault, see ``media.recording.salvage``): once the file is in the store, the row becomes
    playable, keeping its stop reason (it ended early)."""
    from app.imaging.service import object_store

    rows = db.session.scalars(sa.select(ConsultRecording).where(
        ConsultRecording.appointment_id == appointment.id, ConsultRecording.status == RecordingStatus.FAILED,
        ConsultRecording.stop_reason == WORKER_FAILED)).all()
    for row in rows:
        key = object_key(row.recording_id)
        store = object_store()
        try:
            size = store.stat(key).size
        except storage.NoSuchObject:
            continue  # the worker has not started again yet
        digest = hashlib.sha256()
        for chunk in store.get(key):
            digest.update(chunk)
        header, _raw = recording_format.read_header(io.BufferedReader(storage.ChunkReader(store.get(key))))
        row.status, row.object_key, row.size, row.sha256 = RecordingStatus.STORED, key, size, digest.hexdigest()
        row.duration = float(header["duration"])


# ---------------------------------------------------------------- consent


def active_consent(appointment: Appointment) -> RecordingConsent | None:
    return db.session.scalar(sa.select(RecordingConsent).where(
        RecordingConsent.appointment_id == appointment.id, RecordingConsent.revoked_at.is_(None))
        .order_by(RecordingConsent.id.desc()).limit(1))


def running_recording(appointment: Appointment) -> ConsultRecording | None:
    return db.session.scalar(sa.select(ConsultRecording).where(
        ConsultRecording.appointment_id == appointment.id, ConsultRecording.status == RecordingStatus.RECORDING))


def give_consent(appointment: Appointment, *, by: User) -> RecordingConsent:
    """The patient (or staff of their clinic, on their behalf) agrees to this consult being recorded.

    :raises Forbidden: anyone else who can see the appointment (audited). :raises Conflict: consult over.
    """
    if not access.acts_for(appointment.patient, by):
        audit.forbid("consult.recording_consent", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                     resource_id=appointment.id,
                     error=Forbidden("Only the patient, or their clinic on their behalf, can consent to recording."))
    if not appointment.status.is_open:
        raise Conflict("This consult is over; there is nothing to consent to.")
    consent = active_consent(appointment)
    if consent is None:
        consent = RecordingConsent(appointment_id=appointment.id, patient_id=appointment.patient_id,
                                   given_by_id=by.id)
        db.session.add(consent)
        db.session.flush()
        audit.record("consult.recording_consent", by=by, patient_id=appointment.patient_id,
                     resource_type="RecordingConsent", resource_id=consent.id,
                     detail={"on_behalf": by.role is not Role.PATIENT})
    return consent


def revoke_consent(appointment: Appointment, *, by: User) -> RecordingConsent | None:
    """Withdraw consent; a recording that is running stops at once (what was recorded with consent is kept).

    :raises Forbidden: not the patient or their clinic (audited).
    """
    if not access.acts_for(appointment.patient, by):
        audit.forbid("consult.recording_revoke", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                     resource_id=appointment.id,
                     error=Forbidden("Only the patient, or their clinic on their behalf, can withdraw consent."))
    consent = active_consent(appointment)
    if consent is None:
        return None
    consent.revoked_at = db.utcnow()
    consent.revoked_by_id = by.id
    audit.record("consult.recording_revoke", by=by, patient_id=appointment.patient_id,
                 resource_type="RecordingConsent", resource_id=consent.id)
    running = running_recording(appointment)
    if running is not None:
        _finish(appointment, running, by=by, reason="consent revoked")
    return consent


def status(appointment: Appointment, *, by: User) -> dict[str, Any]:
    """What the recording panel shows: consent, whether recording runs, what the viewer may do."""
    consent = active_consent(appointment)
    running = running_recording(appointment)
    settle_interrupted(appointment)
    return {
        "consent": None if consent is None else {
            "id": consent.id, "given_at": consent.given_at.isoformat(), "given_by": consent.given_by.full_name,
            "on_behalf": consent.given_by_id != appointment.patient.user_id},
        "recording": running is not None,
        "can_consent": access.acts_for(appointment.patient, by) and appointment.status.is_open,
        "can_record": by.id == appointment.doctor_id and appointment.status is AppointmentStatus.ARRIVED,
        "recordings": [recording_json(r) for r in list_recordings(appointment, by=by, audit_read=False)]
        if access.may_play(appointment, by) else [],
    }


# ---------------------------------------------------------------- recording


def _open_session(appointment: Appointment) -> ConsultSession:
    session = appointment.session
    if session is None or session.ended_at is not None or appointment.status is not AppointmentStatus.ARRIVED \
            or appointment.encounter is None:
        raise Conflict("Recording needs a running consult.")
    return session


def start(appointment: Appointment, *, by: User) -> ConsultRecording:
    """Start recording (the doctor): needs the patient's active consent and relay mode.

    Switches the consult to relay (signal ``mode``) and commits that first, so the pages move over even when
    the media worker has nothing to record yet (then: 409 with Retry-After, try again once connected).

    :raises NotFound: not the doctor (audited). :raises Conflict: no consent, already recording, no media yet.
    """
    access.require_doctor(appointment, by, "consult.recording_start")
    session = _open_session(appointment)
    consent = active_consent(appointment)
    if consent is None:
        audit.forbid("consult.recording_start", by=by, patient_id=appointment.patient_id,
                     resource_type="ConsultSession", resource_id=session.id, detail={"why": "no consent"},
                     error=Conflict("The patient has not consented to recording."))
    if running_recording(appointment) is not None:
        raise Conflict("This consult is already being recorded.")
    worker = media.worker_for(session)
    signals.move_to_relay(session, by=by, reason="recording")
    consent_id = consent.id
    db.session.commit()  # the mode switch stands even if the worker is not ready yet
    answer = media.call(worker, "POST", f"/relay/{media.relay_room(session)}/recording",
                                 {"consent_id": str(consent_id)}, ok=(201, 403, 404, 409))
    if answer["status"] == 409 and answer["body"].get("title") == "already recording":
        raise Conflict("This consult is already being recorded.")
    if answer["status"] != 201:
        raise Conflict("The consult is moving to the media relay; recording can start once everyone is "
                       "connected. Try again in a few seconds.", headers={"Retry-After": "3"})
    if active_consent(appointment) is None:  # revoked while we were starting: stop again at once
        media.call(worker, "DELETE", f"/relay/{media.relay_room(session)}/recording", None, ok=(200, 404, 409))
        raise Conflict("The patient withdrew consent.")
    assert appointment.encounter is not None
    row = ConsultRecording(recording_id=str(answer["body"]["recording_id"]), appointment_id=appointment.id,
                           encounter_id=appointment.encounter.id, patient_id=appointment.patient_id,
                           consent_id=consent_id, media_worker=worker, started_by_id=by.id)
    db.session.add(row)
    db.session.flush()
    signals.send(session, by, "recording", {"state": "started"})
    audit.record("consult.recording_start", by=by, patient_id=appointment.patient_id,
                 resource_type="ConsultRecording", resource_id=row.id, detail={"consent_id": consent_id})
    return row


def stop(appointment: Appointment, *, by: User) -> ConsultRecording:
    """Stop recording (the doctor): the media worker finishes, encrypts and stores the file; its metadata lands
    here. :raises NotFound: not the doctor (audited). :raises Conflict: not recording.
    """
    access.require_doctor(appointment, by, "consult.recording_stop")
    row = running_recording(appointment)
    if row is None:
        raise Conflict("This consult is not being recorded.")
    return _finish(appointment, row, by=by, reason="stopped")


def _finish(appointment: Appointment, row: ConsultRecording, *, by: User, reason: str) -> ConsultRecording:
    """Stop the worker's recording and write what it stored (also used by consent revocation and the end)."""
    session = appointment.session
    assert session is not None
    answer = media.call(row.media_worker, "DELETE", f"/relay/{media.relay_room(session)}/recording", None,
                                 ok=(200, 404, 409))
    row.stopped_at = db.utcnow()
    row.stopped_by_id = by.id
    row.stop_reason = reason
    body = answer["body"]
    if answer["status"] == 200 and body.get("recording_id") == row.recording_id:
        row.status = RecordingStatus.STORED
        row.object_key = object_key(row.recording_id)
        row.size, row.sha256 = int(body["size"]), str(body["sha256"])
        row.duration = float(body["duration"])
    elif answer["status"] == 404:  # the worker lost it (killed, restarted): what it salvaged comes later
        row.status, row.stop_reason = RecordingStatus.FAILED, WORKER_FAILED
    else:
        row.status = RecordingStatus.FAILED
    signals.send(session, by, "recording", {"state": "stopped"})
    audit.record("consult.recording_stop", by=by, patient_id=appointment.patient_id,
                 resource_type="ConsultRecording", resource_id=row.id,
                 detail={"reason": reason, "status": row.status.value})
    return row


def stop_if_running(appointment: Appointment, *, by: User, reason: str) -> None:
    """Finish a running recording as the consult ends; an unreachable worker marks it failed, never blocks."""
    row = running_recording(appointment)
    if row is None:
        return
    try:
        _finish(appointment, row, by=by, reason=reason)
    except media.MediaUnavailable:
        row.status, row.stopped_at, row.stopped_by_id, row.stop_reason = (
            RecordingStatus.FAILED, db.utcnow(), by.id, "worker unreachable")


def object_key(recording_id: str) -> str:
    """Where the media worker stores the file."""
    return recording_format.object_key(recording_id)


# ---------------------------------------------------------------- listing and playback


def list_recordings(appointment: Appointment, *, by: User, audit_read: bool = True) -> Sequence[ConsultRecording]:
    """Stored recordings of a consult, for the treating doctor and the patient.

    :raises NotFound: anyone else (audited).
    """
    if not access.may_play(appointment, by):
        access.refuse("consult.recording_list", by, appointment.id, appointment.patient_id)
    settle_interrupted(appointment)
    rows = db.session.scalars(sa.select(ConsultRecording).where(
        ConsultRecording.appointment_id == appointment.id, ConsultRecording.status == RecordingStatus.STORED)
        .order_by(ConsultRecording.id)).all()
    if audit_read:
        audit.record("consult.recording_list", by=by, patient_id=appointment.patient_id,
                     resource_type="Appointment", resource_id=appointment.id)
    return rows


def playable_for(by: User, *, patient_id: int | None = None, limit: int = 20) -> Sequence[ConsultRecording]:
    """Recent stored recordings ``by`` may play: consults they treated (doctor) or their own (patient)."""
    from app.patients.models import Patient

    query = sa.select(ConsultRecording).join(Appointment, Appointment.id == ConsultRecording.appointment_id) \
        .where(ConsultRecording.status == RecordingStatus.STORED)
    if by.role is Role.DOCTOR:
        query = query.where(Appointment.doctor_id == by.id)
    elif by.role is Role.PATIENT:
        query = query.join(Patient, Patient.id == Appointment.patient_id).where(Patient.user_id == by.id)
    else:
        return []
    if patient_id is not None:
        query = query.where(ConsultRecording.patient_id == patient_id)
    rows = db.session.scalars(query.order_by(ConsultRecording.id.desc()).limit(limit)).all()
    if rows:
        audit.record("consult.recording_list", by=by, patient_id=patient_id, resource_type="ConsultRecording",
                     detail={"ids": [r.id for r in rows]})
    return rows


def recording_json(row: ConsultRecording) -> dict[str, Any]:
    return {"id": row.id, "started_at": row.started_at.isoformat(),
            "stopped_at": row.stopped_at.isoformat() if row.stopped_at else None,
            "duration": row.duration, "size": row.size, "sha256": row.sha256,
            "url": f"/api/v1/consults/recordings/{row.id}/media"}


def get_for_playback(recording_id: int, *, by: User) -> ConsultRecording:
    """Authorise and audit one playback. :raises NotFound: missing, not stored, or not yours (audited)."""
    row = db.session.get(ConsultRecording, recording_id)
    appointment = db.session.get(Appointment, row.appointment_id) if row is not None else None
    if row is None or appointment is None or row.status is not RecordingStatus.STORED \
            or not access.may_play(appointment, by):
        audit.forbid("consult.recording_play", by=by, patient_id=row.patient_id if row else None,
                     resource_type="ConsultRecording", resource_id=recording_id)
    audit.record("consult.recording_play", by=by, patient_id=row.patient_id, resource_type="ConsultRecording",
                 resource_id=row.id)
    return row


def master_key() -> bytes:
    """The recording master key, derived as the media service derives it (one function for both)."""
    return recording_format.master_key(current_app.config.get("RECORDING_KEY", ""),
                                       str(current_app.config["SECRET_KEY"]))


def _open(row: ConsultRecording) -> Any:
    from app.imaging.service import object_store

    store = object_store()
    assert row.object_key is not None
    try:
        store.stat(row.object_key)
    except storage.NoSuchObject:
        raise NotFound("The recording file is missing.") from None
    return store


@dataclass(frozen=True)
class Layout:
    header: dict[str, Any]
    header_raw: bytes
    first: int
    chunks: int
    size: int
    """Plaintext (WebM) size in bytes."""


def layout(row: ConsultRecording) -> Layout:
    """Read the small authenticated header to learn the plaintext size and where each chunk sits."""
    store = _open(row)
    assert row.object_key is not None and row.size is not None
    head = store.read(row.object_key, start=0, length=len(recording_format.MAGIC) + 4)
    length = int.from_bytes(head[-4:], "big")
    rest = store.read(row.object_key, start=len(head), length=length)
    header, raw = recording_format.read_header(io.BytesIO(head + rest))
    first, chunks, size = recording_format.layout(row.size, raw, int(header["chunk"]))
    return Layout(header, raw, first, chunks, size)


def plaintext_range(row: ConsultRecording, lay: Layout, start: int, stop: int) -> Iterator[bytes]:
    """Plaintext bytes ``[start, stop)``: only the chunks that hold them are read and decrypted."""
    store = _open(row)
    assert row.object_key is not None and row.size is not None
    chunk = int(lay.header["chunk"])
    first, last = start // chunk, (stop - 1) // chunk
    offset = lay.first + first * (chunk + 20)
    length = min(row.size - offset, (last - first + 1) * (chunk + 20))
    reader = io.BufferedReader(storage.ChunkReader(store.get(row.object_key, start=offset, length=length)),
                               buffer_size=chunk + 64)
    key = recording_format.derive_key(master_key(), row.recording_id)

    def chunks() -> Iterator[bytes]:
        for counter in range(first, last + 1):
            sealed = reader.read(int.from_bytes(reader.read(4), "big"))
            plain = recording_format.decrypt_chunk(sealed, key, lay.header, lay.header_raw, counter,
                                                   counter == lay.chunks - 1)
            lo = start - counter * chunk if counter == first else 0
            hi = stop - counter * chunk if counter == last else len(plain)
            yield plain[lo:hi]

    return chunks()


def plaintext(row: ConsultRecording) -> Iterator[bytes]:
    """Stream the decrypted WebM: object-store read → AES-GCM chunk by chunk (1 MiB at a time).

    :raises NotFound: the object is gone from the store.
    """
    store = _open(row)
    assert row.object_key is not None
    reader = io.BufferedReader(storage.ChunkReader(store.get(row.object_key)), buffer_size=1024 * 1024 + 64)
    return recording_format.decrypt(reader, recording_format.derive_key(master_key(), row.recording_id))
