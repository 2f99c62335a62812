"""The encrypted consult-recording format and its keys, shared by the media service (writes) and the app (plays).

Kept free of aiortc, av, aiohttp and Flask so both processes import it without pulling in the other's runtime.

Encrypted format: ``MAGIC | header length (4) | header JSON | chunks``; each chunk is ``length (4) |
AES-256-GCM(chunk)`` with nonce ``prefix (8) | counter (4)`` and AAD ``header | counter | last-flag``, so
reordering, truncation and header edits fail to decrypt. :func:`decrypt` reverses :func:`encrypt_file`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"THREC1\n"
CHUNK = 1024 * 1024


def master_key(configured: str, secret_key: str) -> bytes:
    """The recording master key: ``configured`` (hex of 32+ bytes or any 32+ character string, from
    ``HOSPITAL_RECORDING_KEY``), else derived from the deployment's SECRET_KEY.

    :raises ValueError: a configured key shorter than 32 bytes.
    """
    if configured:
        try:
            key = bytes.fromhex(configured)
        except ValueError:
            key = configured.encode()
        if len(key) < 32:
            raise ValueError("HOSPITAL_RECORDING_KEY must hold at least 32 bytes")
        return key
    return hmac.new(secret_key.encode(), b"town-health recording master key", hashlib.sha256).digest()


def derive_key(master: bytes, recording_id: str) -> bytes:
    """The AES-256 key of one recording: HKDF-SHA256 of the master key, bound to the recording id."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"town-health recording " + recording_id.encode()).derive(master)


def object_key(recording_id: str) -> str:
    """Object key of an encrypted recording: opaque (the id is random), sharded like :func:`storage.keys.new_key`."""
    return f"recordings/{recording_id[:2]}/{recording_id[2:4]}/{recording_id}"


def _aad(header: bytes, counter: int, last: bool) -> bytes:
    return header + struct.pack(">I?", counter, last)


def encrypt_file(src: Path, dst: Path, key: bytes, header: dict[str, Any]) -> tuple[str, int]:
    """Encrypt ``src`` to ``dst`` chunk by chunk; return the ciphertext's SHA-256 and size."""
    aes = AESGCM(key)
    prefix = os.urandom(8)
    header_bytes = json.dumps({**header, "nonce_prefix": prefix.hex(), "chunk": CHUNK}, sort_keys=True).encode()
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        def write(data: bytes) -> None:
            nonlocal size
            fout.write(data)
            digest.update(data)
            size += len(data)

        write(MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes)
        counter = 0
        chunk = fin.read(CHUNK)
        while True:
            following = fin.read(CHUNK)
            last = not following
            sealed = aes.encrypt(prefix + struct.pack(">I", counter), chunk, _aad(header_bytes, counter, last))
            write(struct.pack(">I", len(sealed)) + sealed)
            if last:
                break
            chunk, counter = following, counter + 1
    return digest.hexdigest(), size


def read_header(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    """The authenticated header of an encrypted recording, parsed and raw."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise ValueError("not an encrypted recording")
    (length,) = struct.unpack(">I", stream.read(4))
    raw = stream.read(length)
    return json.loads(raw), raw


def decrypt(stream: IO[bytes], key: bytes) -> Iterator[bytes]:
    """Yield the plaintext of an encrypted recording chunk by chunk (for playback); raises on any tampering."""
    header, raw = read_header(stream)
    aes = AESGCM(key)
    prefix = bytes.fromhex(header["nonce_prefix"])
    counter = 0
    while True:
        length_bytes = stream.read(4)
        if len(length_bytes) != 4:
            raise ValueError("recording is truncated")
        (length,) = struct.unpack(">I", length_bytes)
        sealed = stream.read(length)
        last = stream.peek(1) == b"" if hasattr(stream, "peek") else _at_end(stream)
        yield aes.decrypt(prefix + struct.pack(">I", counter), sealed, _aad(raw, counter, last))
        if last:
            return
        counter += 1


def layout(size: int, header_raw: bytes, chunk: int = CHUNK) -> tuple[int, int, int]:
    """For an encrypted file of ``size`` bytes: (offset of chunk 0, number of chunks, plaintext size).

    Every chunk but the last holds ``chunk`` plaintext bytes and takes ``4 + chunk + 16`` bytes on disk, so a
    player's byte range maps to whole chunks without reading the rest of the file.
    """
    start = len(MAGIC) + 4 + len(header_raw)
    body = size - start
    count = max(1, -(-body // (chunk + 20)))
    return start, count, body - 20 * count


def decrypt_chunk(sealed: bytes, key: bytes, header: dict[str, Any], header_raw: bytes, counter: int,
                  last: bool) -> bytes:
    """Decrypt chunk number ``counter`` on its own (ranged playback); raises on tampering like :func:`decrypt`."""
    prefix = bytes.fromhex(header["nonce_prefix"])
    return AESGCM(key).decrypt(prefix + struct.pack(">I", counter), sealed, _aad(header_raw, counter, last))


def _at_end(stream: IO[bytes]) -> bool:
    position = stream.tell()
    at_end = stream.read(1) == b""
    stream.seek(position)
    return at_end
