"""The filesystem store's presigned GET links, served, so they work as S3's do when the platform runs on the
embedded store.

The link itself is the authorisation: the app hands one out only after its own access check and audit, and it
expires within minutes (``ObjectStore.presigned_get``). With the S3 store links point at S3 and this route is 404.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.errors import Forbidden, NotFound
from app.imaging.service import object_store
from app.web import byte_range_response
from storage import FilesystemStore, NoSuchObject
from storage.keys import is_valid

bp = Blueprint("objects", __name__)


@bp.get("/objects/<path:key>")
def presigned_get(key: str) -> Response:
    """Stream the object (byte ranges allowed) if the link's signature is good and unexpired."""
    store = object_store()
    if not isinstance(store, FilesystemStore) or not is_valid(key):
        raise NotFound("No such object.")
    try:
        expires, signature = int(request.args["expires"]), request.args["signature"]
    except (KeyError, ValueError):
        raise Forbidden("This link is incomplete: it needs its expiry and signature.") from None
    if not store.verify_presigned(key, expires, signature):
        raise Forbidden("This link has expired or is not valid. Ask for a new one.")
    try:
        size = store.stat(key).size
    except NoSuchObject:
        raise NotFound("The object no longer exists.") from None
    return byte_range_response(size, lambda: store.get(key), lambda a, b: store.get(key, start=a, length=b - a),
                               mimetype="application/octet-stream", headers={"Cache-Control": "private, no-store"})
