"""Ed25519 signatures over a prescription's canonical JSON, and the QR payload that carries both.

Payload: ``THRX1.<base64url(canonical JSON)>.<base64url(signature)>``. Anyone holding the public key can
check it offline (:func:`verify_payload`, or ``python -m app.prescriptions.signing --public-key k.pem PAYLOAD``);
the pharmacy additionally checks it against the database (not altered, not cancelled, not fully dispensed).
This module imports nothing from the app except at key-loading time, so it runs on a laptop with only
``cryptography`` installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "THRX1"
_keys: dict[Path, Ed25519PrivateKey] = {}


class InvalidPayload(ValueError):
    """The QR payload is malformed, or its signature does not match its content."""


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same document always gives the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """Read the PEM key at ``path``; with ``create`` generate it there (mode 0600) if absent.

    Creation is atomic (hard link of a finished temporary file), so several workers starting at once
    end up with the same key.
    """
    if path in _keys:
        return _keys[path]
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"prescription signing key not found: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker won; use its key
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the prescription signing key must be an Ed25519 key")
    _keys[path] = key
    return key


def app_private_key() -> Ed25519PrivateKey:
    """The configured key, or one generated under the instance folder (which must then persist)."""
    from flask import current_app

    configured = current_app.config.get("RX_SIGNING_KEY_FILE")
    path = Path(configured) if configured else Path(current_app.instance_path) / "rx_signing_key.pem"
    return load_private_key(path, create=configured is None)


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(document: dict[str, Any], private_key: Ed25519PrivateKey) -> tuple[bytes, str, str]:
    """Return (canonical bytes, base64url signature, QR payload)."""
    canonical = canonical_bytes(document)
    signature = _b64(private_key.sign(canonical))
    return canonical, signature, f"{PREFIX}.{_b64(canonical)}.{signature}"


def payload_for(canonical: bytes, signature: str) -> str:
    return f"{PREFIX}.{_b64(canonical)}.{signature}"


def verify_payload(payload: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check a QR payload offline and return the signed document.

    :raises InvalidPayload: malformed, or the signature does not match (altered or signed by another key).
    """
    parts = payload.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidPayload("not a Town Health prescription code")
    try:
        canonical = _unb64(parts[1])
        signature = _unb64(parts[2])
    except (ValueError, TypeError) as exc:
        raise InvalidPayload("the code is damaged") from exc
    try:
        public_key.verify(signature, canonical)
    except InvalidSignature as exc:
        raise InvalidPayload("the signature does not match: altered or not issued by this hospital") from exc
    try:
        document = json.loads(canonical)
    except ValueError as exc:
        raise InvalidPayload("the code is damaged") from exc
    if not isinstance(document, dict) or canonical_bytes(document) != canonical:
        raise InvalidPayload("the signed content is not in canonical form")
    return document


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def main(argv: list[str] | None = None) -> int:
    """Offline check: prints the prescription if the payload verifies, exits 1 otherwise."""
    parser = argparse.ArgumentParser(description="Verify a Town Health prescription QR payload offline.")
    parser.add_argument("--public-key", required=True, type=Path,
                        help="PEM file from /api/v1/prescriptions/signing-key")
    parser.add_argument("payload", help="the text inside the QR code (or - to read stdin)")
    args = parser.parse_args(argv)
    payload = sys.stdin.read() if args.payload == "-" else args.payload
    try:
        document = verify_payload(payload, load_public_key(args.public_key.read_bytes()))
    except InvalidPayload as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print("VALID signature")
    print(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
