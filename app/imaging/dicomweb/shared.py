"""What the DICOMweb services share: the blueprint, DICOM JSON building blocks, CORS and the URLs they hand out.

URLs handed out (RetrieveURL, BulkDataURI) are built from the request's own host and scheme; behind a reverse
proxy they follow ``X-Forwarded-Host``/``-Proto`` once ``TRUSTED_PROXIES`` is set (see :mod:`app`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, request, url_for

from app.auth import bearer, service_credentials
from app.catalogue import N_
from app.errors import AppError
from app.extensions import csrf
from app.imaging import service

logger = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
csrf.exempt(bp)  # multipart/related cannot be sent cross-site without a CORS preflight, which we control
bearer.declare(bp, "ImagingStudy")
bearer.accept_credentials(bp, service_credentials.authenticate_peer)  # PACS peers sign requests with HTTP Basic
DICOM_JSON = "application/dicom+json"


class NotAcceptable(AppError):
    status, slug, title = 406, "not-acceptable", N_("The requested representation is not available")


@bp.record_once
def _open_store(state: Any) -> None:
    """Open the S3 store while the process starts (SDK import, bucket check or creation) rather than in the first
    upload. If S3 cannot be reached yet, the app still starts, and the first request that needs it tries again."""
    if state.app.config.get("OBJECT_STORE") != "s3":
        return
    with state.app.app_context():
        try:
            service.object_store()
        except Exception:  # noqa: BLE001 - logged; the store is opened again on first use
            logger.warning("the object store is not reachable at start; it is tried again on first use",
                           exc_info=True)


def element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON attribute; empty values are left out (an attribute present with no value)."""
    vals = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": vals} if vals else {"vr": vr}


def person_name(value: str | None) -> dict[str, Any]:
    """A PN attribute with its component groups split (``Alphabetic=Ideographic=Phonetic``, PS3.18 F.2.2)."""
    if not value:
        return {"vr": "PN"}
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False))
    return {"vr": "PN", "Value": [{k: v for k, v in groups.items() if v}]}


def dicom_json(body: Any, status: int = 200, *, warnings: list[str] | None = None) -> Response:
    """A DICOM JSON response, with a ``Warning: 299`` header per warning (PS3.18 §8.4.2)."""
    resp = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype=DICOM_JSON)
    for text in warnings or ():
        resp.headers.add("Warning", warning_value(text))
    return resp


def warning_value(text: str) -> str:
    """One RFC 7234 warning, ``299 <host> "<text>"``."""
    return f'299 {request.host} "{text.replace(chr(34), chr(39))}"'


def retrieve_url(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> str:
    """The absolute WADO-RS URL of a study, series or instance."""
    url = url_for("dicomweb.study_retrieve", study_uid=study_uid, _external=True)
    if series_uid:
        url += f"/series/{series_uid}"
    if sop_uid:
        url += f"/instances/{sop_uid}"
    return url


def accepted() -> list[tuple[str, dict[str, str]]]:
    """The Accept header as (media type, parameters) in the client's order of preference; ``*/*`` if absent.

    Parameters matter here (``multipart/related; type="application/octet-stream"; transfer-syntax=*``), which
    werkzeug's parsed Accept drops.
    """
    header = request.headers.get("Accept", "").strip() or "*/*"
    options: list[tuple[float, int, str, dict[str, str]]] = []
    for index, item in enumerate(_split(header, ",")):
        media, *raw = _split(item, ";")
        params: dict[str, str] = {}
        for param in raw:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        if media.strip() and quality > 0:
            options.append((-quality, index, media.strip().lower(), params))
    return [(media, params) for _, _, media, params in sorted(options)]


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def require_json_accepted() -> None:
    """:raises NotAcceptable: the client accepts neither DICOM JSON nor JSON (e.g. only DICOM XML)."""
    for media, _params in accepted():
        if media in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return
    raise NotAcceptable("This resource is available as application/dicom+json only.")
