"""STOW-RS: ``POST /dicomweb/studies[/{study}]`` stores instances sent as multipart/related (PS3.18 §10.5).

Each part is answered on its own: stored and duplicate parts in ReferencedSOPSequence, the others in
FailedSOPSequence with a Failure Reason and a reason people can read; nothing is acknowledged before its object
and rows are committed.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO

import pydicom
from flask import Response, current_app, request
from flask_babel import gettext
from flask_login import current_user, login_required

from app import db
from app.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from app.imaging import service
from app.imaging.dicomweb.shared import bp, dicom_json, element, require_json_accepted, retrieve_url
from app.imaging.ingest import index_and_commit, stage_one
from app.imaging.multipart import MalformedMultipart, iter_parts

FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700  # the sender should retry
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_OTHER_STUDY = 0xC409  # the instance is not of the study in the URL (the code dcm4chee and others use)

@bp.post("/studies")
@bp.post("/studies/<study_uid>")
@login_required
def stow(study_uid: str | None = None) -> Response:
    """Store instances sent as multipart/related; type="application/dicom"; to ``/studies/{uid}`` only
    instances of that study (the others are refused one by one, not stored)."""
    require_json_accepted()
    ctype = request.headers.get("Content-Type", "")
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not ctype.lower().startswith("multipart/related") or not m:
        raise UnsupportedMediaType("Send multipart/related; type=\"application/dicom\".")
    part_type = re.search(r'type="?([^";]+)"?', ctype)
    if part_type and part_type.group(1).lower() != "application/dicom":
        raise UnsupportedMediaType("Only application/dicom parts are accepted.")
    limit = current_app.config["IMAGING_MAX_UPLOAD_BYTES"]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge("The request is larger than the configured limit.")
    if not service.can_ingest(current_user):
        service.stage(None, filename="", by=current_user, source="stow")  # type: ignore[arg-type]  # audits, raises
    max_file = current_app.config["IMAGING_MAX_FILE_BYTES"]
    n = 0
    outcomes: list[service.IngestResult | dict[str, Any]] = []  # per part: a result, or a failure item
    results: list[service.IngestResult] = []
    pending: dict[str, service.IngestResult] = {}
    try:
        body = _LimitedStream(request.stream, limit)  # a chunked body has no Content-Length to check up front
        for headers, fh in iter_parts(body, m.group(1).encode(), max_part=max_file):
            n += 1
            if headers.get("x-too-large"):
                outcomes.append({"00081197": element("US", FAILURE_PROCESSING),
                                 "00000902": element("LO", "file is larger than the allowed size")})
                continue
            ptype = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
            if ptype != "application/dicom":
                outcomes.append({"00081197": element("US", FAILURE_CANNOT_UNDERSTAND),
                                 "00000902": element("LO", "part is not application/dicom")})
                continue
            if study_uid is not None and (other := _other_study(fh, study_uid)) is not None:
                outcomes.append(other)
                continue
            result = stage_one(fh, filename=f"part {n}", by=current_user, source="stow", pending=pending,
                               background=True)
            outcomes.append(result)
            results.append(result)
    except MalformedMultipart as exc:
        _discard(results)
        raise ValidationFailed(gettext("The multipart body is malformed: %(problem)s.", problem=exc)) from None
    except BaseException:
        _discard(results)
        raise
    index_and_commit(results, by=current_user, facility_id=current_user.facility_id)
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, dict):
            failed.append(outcome)
            continue
        item = {"00081150": element("UI", outcome.sop_class_uid),
                "00081155": element("UI", outcome.sop_instance_uid)}
        if outcome.ok:
            item["00081190"] = element("UR", retrieve_url(outcome.study_instance_uid or "",
                                                          sop_uid=outcome.sop_instance_uid))
            if outcome.status == "duplicate":
                item["00081196"] = element("US", 0xB007)
            referenced.append(item)
        else:
            code = FAILURE_DUPLICATE if outcome.status == "conflict" else \
                FAILURE_OUT_OF_RESOURCES if outcome.transient else FAILURE_CANNOT_UNDERSTAND
            item["00081197"] = element("US", code)
            item["00000902"] = element("LO", outcome.reason)
            failed.append(item)
    body_out: dict[str, Any] = {}
    if referenced:
        body_out["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body_out["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    return dicom_json(body_out, status)


def _other_study(fh: BinaryIO, study_uid: str) -> dict[str, Any] | None:
    """The failure item of a part whose instance belongs to another study than ``study_uid``, read before
    anything is stored; None when it is of that study (or unreadable, which :func:`stage_one` reports)."""
    try:
        ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True,
                             specific_tags=["StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"])
    except Exception:  # noqa: BLE001 - not for this check to judge
        return None
    finally:
        fh.seek(0)
    found = str(ds.get("StudyInstanceUID", "") or "")
    if not found or found == study_uid:
        return None
    return {"00081150": element("UI", str(ds.get("SOPClassUID", "") or "")),
            "00081155": element("UI", str(ds.get("SOPInstanceUID", "") or "")),
            "00081197": element("US", FAILURE_OTHER_STUDY),
            "00000902": element("LO", "the instance belongs to another study than the one in the URL; not stored")}


class _LimitedStream:
    """A request body that raises 413 once more than ``limit`` bytes have been read."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream, self._left = stream, limit

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._left -= len(data)
        if self._left < 0:
            raise PayloadTooLarge("The request is larger than the configured limit.")
        return data


def _discard(results: list[service.IngestResult]) -> None:
    """The request failed part-way: nothing of it is kept, rows or objects."""
    db.rollback()
    service.discard_objects(results)
