"""WADO-RS: instances, metadata, frames and rendered images of studies, series and instances (PS3.18 §10.4).

Every read is authorised and audited by :mod:`app.imaging.service` before a byte leaves storage.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pydicom
from flask import Response, request, stream_with_context
from flask_login import current_user, login_required

from app import db, read_path
from app.errors import NotFound, ValidationFailed
from app.imaging import dicomfile, render, service
from app.imaging.dicomweb.headers import Lru, full_dataset, header_of, shared_header
from app.imaging.dicomweb.shared import (
    NotAcceptable,
    accepted,
    bp,
    dicom_json,
    element,
    require_json_accepted,
    retrieve_url,
)
from app.imaging.models import Instance

logger = logging.getLogger(__name__)
EXPLICIT_LE, IMPLICIT_LE, BIG_ENDIAN = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
NATIVE_LE = frozenset({EXPLICIT_LE, IMPLICIT_LE})  # frame bytes are the same in both


def _instances_of(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[Instance]:
    if sop_uid is not None:
        return [service.get_instance(study_uid, series_uid, sop_uid, by=current_user)]
    if series_uid is not None:
        series = service.get_series(study_uid, series_uid, by=current_user)
        return list(series.instances)
    study = service.get_study(study_uid, by=current_user)
    return [i for s in study.series for i in s.instances]


def _instance_syntax(instances: list[Instance]) -> tuple[str, str | None]:
    """How to send whole instances: (part media type, transfer syntax to transcode to, or None for as stored).

    ``transfer-syntax=*`` or none given sends each instance as stored; an explicit syntax is honoured as stored
    or by decompressing to Explicit VR Little Endian, and refused otherwise.

    :raises NotAcceptable: nothing the client accepts can be sent.
    """
    for media, params in accepted():
        if media in ("*/*", "multipart/*"):
            return "multipart/related", None
        single = media == "application/dicom" and len(instances) == 1  # one instance may come as a single part
        if not single and (media != "multipart/related"
                           or params.get("type", "application/dicom").lower() != "application/dicom"):
            continue
        wanted = params.get("transfer-syntax", "*")
        if wanted == "*" or all(i.transfer_syntax_uid == wanted for i in instances):
            return media, None
        if wanted == EXPLICIT_LE and all(i.transfer_syntax_uid != BIG_ENDIAN for i in instances):
            return media, EXPLICIT_LE
    stored = sorted({i.transfer_syntax_uid for i in instances})
    raise NotAcceptable(f"These instances are available as application/dicom in {', '.join(stored)} (as stored) "
                        f"or {EXPLICIT_LE} (decompressed), with multipart/related.")


def _transcoded(inst: Instance) -> bytes:
    """The instance re-encoded in Explicit VR Little Endian (decompressed if need be)."""
    ds = full_dataset(inst)
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        else:
            ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    except Exception:  # noqa: BLE001 - no decoder for this syntax: the part cannot be sent as asked
        logger.warning("could not transcode instance %s", inst.id, exc_info=True)
        raise NotAcceptable("An instance cannot be decompressed here; ask for transfer-syntax=*.") from None
    return buf.getvalue()


def _multipart(parts: Iterator[tuple[str, Iterator[bytes]]], part_type: str) -> Response:
    """A multipart/related response streamed from storage (whole instances)."""
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for ctype, chunks in parts:
            yield f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode()
            yield from chunks
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return Response(stream_with_context(body()), mimetype=None,
                    content_type=f'multipart/related; type="{part_type}"; boundary={boundary}')


def _multipart_in_memory(ctype: str, parts: list[bytes]) -> Response:
    """A multipart/related response of parts already read (frames): sent with its length, not chunked, and
    without holding the request context (and its database connection) while it goes out."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode()
    chunks = [piece for part in parts for piece in (head, part, b"\r\n")] + [f"--{boundary}--\r\n".encode()]
    resp = Response(chunks, mimetype=None,
                    content_type=f'multipart/related; type="{ctype.split(";")[0]}"; boundary={boundary}')
    resp.content_length = sum(len(c) for c in chunks)
    return resp


# Stored content never changes under its SOP Instance UID (a different object sent under the same UID is refused
# and the original kept), so what is derived from it is cached by the viewer's browser and revalidated by ETag.
# ``private``: a shared proxy never keeps patient images; a day, so a browser does not keep them for longer.
IMMUTABLE = "private, max-age=86400, immutable"


def _etag(inst: Instance, *parts: object) -> str:
    """The entity tag of a representation of ``inst``: its content hash and a digest of what was asked of it.

    Used as a weak tag: the same frames come in a multipart body whose boundary differs from one answer to the
    next, equivalent but not byte for byte the same.
    """
    asked = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return f"{inst.sha256[:32]}-{asked}"


def _not_modified(etag: str) -> Response | None:
    """A 304 when the client already has this representation (checked after the read is authorised and
    audited: a revalidation is a read too)."""
    if not request.if_none_match.contains_weak(etag):
        return None
    resp = Response(status=304)
    resp.set_etag(etag, weak=True)
    resp.headers["Cache-Control"] = IMMUTABLE
    return resp


def _cacheable(resp: Response, etag: str) -> Response:
    resp.set_etag(etag, weak=True)
    resp.headers["Cache-Control"] = IMMUTABLE
    resp.vary.add("Accept")
    return resp


def _retrieve(instances: list[Instance]) -> Response:
    if not instances:
        raise NotFound("No instances.")
    media, target = _instance_syntax(instances)
    if target is not None:
        data = [_transcoded(i) for i in instances]  # decoded up front: a failure is a clean 406
        db.session.commit()
        if media == "application/dicom":
            return Response(data[0], mimetype="application/dicom")
        return _multipart_in_memory(f"application/dicom; transfer-syntax={target}", data)
    store = service.object_store()
    keys = [(i.object_key, i.transfer_syntax_uid) for i in instances]
    db.session.commit()
    if media == "application/dicom":
        return Response(stream_with_context(store.get(keys[0][0])), mimetype="application/dicom")
    parts = ((f"application/dicom; transfer-syntax={ts}", store.get(key)) for key, ts in keys)
    return _multipart(parts, "application/dicom")


@bp.get("/studies/<study_uid>")
@bp.get("/studies/<study_uid>/series/<series_uid>")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>")
@bp.get("/studies/<study_uid>/instances/<sop_uid>")
@read_path.checks_session
@login_required
def study_retrieve(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> Response:
    """Whole instances of a study, a series or one instance, as multipart/related application/dicom."""
    return _retrieve(_instances_of(study_uid, series_uid, sop_uid))


# Rendered images, per process.
RENDERED_CACHE = Lru(64 * 1024 * 1024, cost=len)  # bytes


def _json_size(item: dict[str, Any]) -> int:
    """What an item costs the metadata cache: the length of its JSON (bulk data is left out, so it is small)."""
    return len(json.dumps(item, separators=(",", ":")))


# DICOM JSON of each instance's header, without what depends on the request (frames URL, transfer syntax), per
# process; keyed by object and content hash like the others, so never stale.
METADATA_CACHE = Lru(32 * 1024 * 1024, cost=_json_size)  # bytes


def _parsed_item(inst: Instance) -> dict[str, Any]:
    """The header as DICOM JSON with pixel data and other bulk data left out (clients fetch frames by URL)."""
    ds = header_of(inst)
    ds.pop("PixelData", None)
    item = ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda _el: "")
    return {tag: el for tag, el in item.items() if "BulkDataURI" not in el}


def _base_item(inst: Instance) -> dict[str, Any]:
    """The parsed item, shared from the cache by every request for this content; callers must not modify it."""
    key = (inst.object_key, inst.sha256)
    item = METADATA_CACHE.get(key)
    if item is None:
        item = _parsed_item(inst)
        METADATA_CACHE.put(key, item)
    return item


def _metadata_item(inst: Instance) -> dict[str, Any]:
    """The instance's DICOM JSON for this request: the frames URL names the host the client asked by."""
    item = dict(_base_item(inst))  # a copy: the cached item stays as parsed
    if inst.number_of_frames:  # reports, PDFs and other objects without pixel data have no frames
        series = inst.series
        url = retrieve_url(series.study.study_instance_uid, series.series_instance_uid, inst.sop_instance_uid)
        item["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{url}/frames/1"}
    item["00020010"] = element("UI", inst.transfer_syntax_uid)
    item["00083002"] = element("UI", inst.transfer_syntax_uid)
    return item


def _metadata(instances: list[Instance]) -> Response:
    """Headers of instances already authorised and audited (the cache is consulted only after that)."""
    require_json_accepted()
    out = [_metadata_item(inst) for inst in instances]
    db.session.commit()
    return dicom_json(out)


@bp.get("/studies/<study_uid>/metadata")
@bp.get("/studies/<study_uid>/series/<series_uid>/metadata")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/metadata")
@read_path.checks_session
@login_required
def metadata(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> Response:
    """The DICOM JSON headers of a study, a series or one instance; pixel data by BulkDataURI."""
    return _metadata(_instances_of(study_uid, series_uid, sop_uid))


def _frame_numbers(text: str, total: int) -> list[int]:
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValidationFailed("Frame numbers are integers separated by commas.") from None
    if not numbers or any(n < 1 or n > total for n in numbers):
        raise NotFound("No such frame.")
    return numbers


def _native_frames(inst: Instance, numbers: list[int], header: pydicom.Dataset) -> list[bytes]:
    bits = int(header.get("BitsAllocated", 16))
    spp = int(header.get("SamplesPerPixel", 1))
    length = (inst.rows or 0) * (inst.columns or 0) * spp * bits // 8
    store = service.object_store()
    assert inst.pixel_data_offset is not None
    return [store.read(inst.object_key, start=inst.pixel_data_offset + (n - 1) * length, length=length)
            for n in numbers]


def _encapsulated_frames(inst: Instance, numbers: list[int]) -> list[bytes]:
    from pydicom.encaps import generate_frames

    ds = full_dataset(inst)
    frames = list(generate_frames(ds.PixelData, number_of_frames=inst.number_of_frames))
    return [frames[n - 1] for n in numbers]


COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
# The transfer syntax a media type means when the Accept names none (PS3.18 table 8.7.3-5).
DEFAULT_SYNTAX = {"application/octet-stream": EXPLICIT_LE, "image/jpeg": "1.2.840.10008.1.2.4.50",
                  "image/jls": "1.2.840.10008.1.2.4.80", "image/jp2": "1.2.840.10008.1.2.4.90",
                  "image/dicom-rle": "1.2.840.10008.1.2.5"}


def _frame_syntax(stored: str) -> str | None:
    """What to send frames of an instance stored in ``stored`` as: ``"stored"`` (as they are, native frames
    labelled Explicit VR Little Endian), ``"decoded"`` (decompressed to Explicit VR Little Endian), or None when
    nothing the client accepts can be sent."""
    for media, params in accepted():
        if media in ("*/*", "multipart/*"):
            return "stored"
        if media != "multipart/related":
            continue
        part = params.get("type", "application/octet-stream").lower()
        wanted = params.get("transfer-syntax") or DEFAULT_SYNTAX.get(part)
        if part in ("*/*", "*") or wanted == "*":
            return "stored"
        if part == "application/octet-stream" and wanted in (EXPLICIT_LE, IMPLICIT_LE):
            return "stored" if stored in NATIVE_LE else "decoded"
        if COMPRESSED_MEDIA.get(stored) == part and wanted == stored:
            return "stored"
    return None


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<frame_list>")
@read_path.checks_session
@login_required
def frames(study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> Response:
    """Frames as the Accept asks: as stored (``transfer-syntax=*``; uncompressed ones are range-read), or
    decompressed to Explicit VR Little Endian; never in a syntax other than the one the answer names."""
    inst = service.get_instance(study_uid, series_uid, sop_uid, by=current_user, action="imaging.frames.read")
    numbers = _frame_numbers(frame_list, inst.number_of_frames)
    ts = inst.transfer_syntax_uid
    db.session.commit()
    how = _frame_syntax(ts)
    if how is None:
        media = COMPRESSED_MEDIA.get(ts, "application/octet-stream")
        raise NotAcceptable(f"These frames are available as {media} in {ts} (as stored) or as "
                            f"application/octet-stream in {EXPLICIT_LE} (decompressed), with multipart/related.")
    etag = _etag(inst, "frames", ",".join(map(str, numbers)), how)
    if (unchanged := _not_modified(etag)) is not None:
        return unchanged
    if ts in NATIVE_LE and inst.pixel_data_offset:
        data = _native_frames(inst, numbers, shared_header(inst))
        ctype = f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    elif how == "stored" and ts in COMPRESSED_MEDIA:
        data = _encapsulated_frames(inst, numbers)
        ctype = f"{COMPRESSED_MEDIA[ts]}; transfer-syntax={ts}"
    else:
        ds = full_dataset(inst)
        try:
            arrays = [render.decoded_frame(ds, n - 1) for n in numbers]
            data = [a.astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays]
        except Exception:  # noqa: BLE001 - no decoder for this syntax here
            logger.warning("could not decode frames of instance %s", inst.id, exc_info=True)
            raise NotAcceptable(f"These frames cannot be decompressed here; ask for transfer-syntax={ts}.") from None
        ctype = f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    return _cacheable(_multipart_in_memory(ctype, data), etag)


# ---------------------------------------------------------------- rendered


def _window() -> tuple[float, float] | None:
    value = request.args.get("window")
    if not value:
        return None
    try:
        parts = [float(x) for x in value.split(",")[:2]]
        return parts[0], parts[1]
    except (ValueError, IndexError):
        raise ValidationFailed("window is center,width[,function].") from None


def _viewport() -> tuple[int, int] | None:
    value = request.args.get("viewport")
    if not value:
        return None
    try:
        w, h = (int(x) for x in value.split(",")[:2])
        return max(1, min(w, 4096)), max(1, min(h, 4096))
    except ValueError:
        raise ValidationFailed("viewport is width,height.") from None


def _rendered_type() -> str:
    wanted = (request.args.get("accept") or request.headers.get("Accept") or "image/jpeg").lower()
    if "image/png" in wanted and "image/jpeg" not in wanted.split(",")[0]:
        return "image/png"
    if "image/jpeg" in wanted or "*/*" in wanted or "image/*" in wanted:
        return "image/jpeg"
    if "image/png" in wanted:
        return "image/png"
    raise NotAcceptable("Rendered images are image/jpeg or image/png.")


def render_instance(inst: Instance, frame: int, *, window: tuple[float, float] | None, media_type: str,
                    viewport: tuple[int, int] | None = None) -> bytes:
    """Render one frame (1-based), cached per (object content, frame, window, type, viewport)."""
    if frame < 1 or frame > inst.number_of_frames:
        raise NotFound("No such frame.")
    key = (inst.object_key, inst.sha256, frame, window, media_type, viewport)
    data = RENDERED_CACHE.get(key)
    if data is None:
        data = _render_uncached(inst, frame, window=window, media_type=media_type, viewport=viewport)
        RENDERED_CACHE.put(key, data)
    return data


def _render_uncached(inst: Instance, frame: int, *, window: tuple[float, float] | None, media_type: str,
                     viewport: tuple[int, int] | None) -> bytes:
    ts = inst.transfer_syntax_uid
    if ts in dicomfile.UNCOMPRESSED and inst.pixel_data_offset:
        header = shared_header(inst)
        raw = _native_frames(inst, [frame], header)[0]
        arr = render.native_frame(header, raw, big_endian=ts == "1.2.840.10008.1.2.2")
        if arr is not None:
            return render.encode(render.to_image(arr, header, window=window), media_type, viewport=viewport)
    ds = full_dataset(inst)
    try:
        arr = render.decoded_frame(ds, frame - 1)
    except Exception:  # noqa: BLE001 - a decoder may be missing for an exotic syntax
        raise NotFound("This image cannot be rendered here.") from None
    return render.encode(render.to_image(arr, ds, window=window), media_type, viewport=viewport)


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/rendered")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<int:frame>/rendered")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/thumbnail")
@read_path.checks_session
@login_required
def rendered(study_uid: str, series_uid: str, sop_uid: str, frame: int = 1) -> Response:
    media_type = _rendered_type()
    viewport = _viewport() or ((128, 128) if request.path.endswith("/thumbnail") else None)
    window = _window()
    inst = service.get_instance(study_uid, series_uid, sop_uid, by=current_user, action="imaging.rendered.read")
    db.session.commit()
    etag = _etag(inst, "rendered", frame, window, media_type, viewport)
    if (unchanged := _not_modified(etag)) is not None:
        return unchanged
    data = render_instance(inst, frame, window=window, media_type=media_type, viewport=viewport)
    return _cacheable(Response(data, mimetype=media_type), etag)
