"""Coverage-guided fuzz targets (atheris) for the parsers that take untrusted bytes.

Each target turns one input into a call of the real parser and lets through only the refusals the parser is
documented to give; anything else (an IndexError, a RecursionError, a 500 from the OAuth endpoints) is a crash.

    python -m tests.fuzz.targets NAME [libFuzzer options]   # one target (``make fuzz`` runs them all)

Inputs that once crashed stay in ``tests/fuzz_corpus/NAME/`` beside the seeds, and ``test_corpus.py`` replays
every one of them in the normal test run.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent.parent / "fuzz_corpus"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def dicom_header(data: bytes) -> None:
    from app.imaging.dicomfile import Rejected, read_header

    with contextlib.suppress(Rejected):
        read_header(io.BytesIO(data), len(data))


def stow_multipart(data: bytes) -> None:
    from app.imaging.multipart import MalformedMultipart, PartTooLarge, iter_parts

    boundary, _, body = data.partition(b"\n")
    try:
        for _headers, part in iter_parts(io.BytesIO(body), boundary[:70] or b"b", max_part=4096):
            part.read()
    except (MalformedMultipart, PartTooLarge):
        pass


def zip_ingest(data: bytes) -> None:
    from app.imaging.ingest import zip_entries

    with _flask_context(IMAGING_MAX_FILE_BYTES=1 << 20, IMAGING_MAX_ZIP_ENTRIES=64):
        for _label, entry, reason in zip_entries(io.BytesIO(data), "upload.zip"):
            assert (entry is None) == bool(reason)
            if entry is not None:
                dicom_header(entry.read())


def signaling(data: bytes) -> None:
    """An SDP offer or an ICE candidate as the signaling endpoint receives them (JSON already decoded)."""
    import json

    from app.consults.service import validate_signal
    from app.errors import ValidationFailed

    kind, _, rest = _text(data).partition("\n")
    try:
        payload = json.loads(rest)
    except (ValueError, RecursionError):
        payload = {"sdp": rest, "candidate": {"candidate": rest}}
    if not isinstance(payload, dict):
        payload = {"value": payload}
    with contextlib.suppress(ValidationFailed):
        validate_signal(kind[:16], payload)


def pickup_and_qr(data: bytes) -> None:
    """A pickup code as typed, and a prescription QR payload as scanned."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from app.pharmacy.service import normalise_code
    from app.prescriptions.signing import InvalidPayload, verify_payload

    text = _text(data)
    code = normalise_code(text)
    assert code is None or (len(code) == 8 and code.isalnum() and code.isascii())
    with contextlib.suppress(InvalidPayload):
        verify_payload(text, _KEY.setdefault("key", Ed25519PrivateKey.generate()).public_key())


def oauth_params(data: bytes) -> None:
    """Scopes and the OAuth endpoints' parameters: refused with an OAuth error, never a 500."""
    from urllib.parse import parse_qsl

    from app.auth import scopes

    text = data.decode("utf-8", "replace")  # what a form or query string decoder makes of the bytes
    for scope in text.split(" ")[:20]:
        scopes.describe(scope)
        scopes.covers(["user/*.rs", "patient/Patient.read"], scope)
    client = _oauth_client()
    params = dict(parse_qsl(text[:4000], keep_blank_values=True))
    for method, path in (("POST", "/oauth/token"), ("POST", "/oauth/introspect"), ("POST", "/oauth/revoke"),
                         ("GET", "/oauth/authorize")):
        resp = client.get(path, query_string=params) if method == "GET" else client.post(path, data=params)
        assert resp.status_code < 500, (path, resp.status_code, resp.get_data(as_text=True)[:300])


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dicom_header": dicom_header,
    "stow_multipart": stow_multipart,
    "zip_ingest": zip_ingest,
    "signaling": signaling,
    "pickup_and_qr": pickup_and_qr,
    "oauth_params": oauth_params,
}

_KEY: dict[str, Any] = {}
_STATE: dict[str, Any] = {}


def _flask_context(**config: Any) -> Any:
    from flask import Flask

    app = _STATE.get("plain_app")
    if app is None:
        app = _STATE["plain_app"] = Flask("fuzz")
    app.config.update(config)
    return app.app_context()


def _oauth_client() -> Any:
    """The real app on a throwaway SQLite database, built once per process."""
    if "client" not in _STATE:
        from app import create_app
        from app.cli import migrate
        from app.config import TestConfig

        folder = Path(tempfile.mkdtemp(prefix="fuzz-oauth-"))
        cfg = TestConfig()
        cfg.DATABASE_URL = f"sqlite:///{folder / 'fuzz.db'}"
        cfg.INSTANCE_PATH = folder
        cfg.STORAGE_PATH = folder / "objects"
        migrate(cfg.DATABASE_URL)
        _STATE["client"] = create_app(cfg).test_client()
    return _STATE["client"]


def main(argv: list[str]) -> None:
    import atheris

    name = argv[1]
    target = TARGETS[name]
    corpus = CORPUS / name
    corpus.mkdir(parents=True, exist_ok=True)
    with atheris.instrument_imports(include=["app", "storage"]):
        import app.auth.scopes  # noqa: F401
        import app.consults.service  # noqa: F401
        import app.imaging.dicomfile  # noqa: F401
        import app.imaging.ingest  # noqa: F401
        import app.imaging.multipart  # noqa: F401
        import app.pharmacy.service  # noqa: F401
        import app.prescriptions.signing  # noqa: F401
    if name == "oauth_params":
        _oauth_client()
    # New inputs go to a scratch folder; the committed corpus only grows by hand (seeds and crash inputs).
    scratch = tempfile.mkdtemp(prefix=f"fuzz-{name}-")
    atheris.Setup([argv[0], *argv[2:], scratch, str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
