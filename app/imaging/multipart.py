"""A streaming multipart/related reader (STOW-RS bodies): each part goes to a temp file (up to 16 MiB in memory),
never the whole body to memory.

Werkzeug's decoder insists on Content-Disposition, which multipart/related parts do not carry.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

CHUNK = 1024 * 1024
SPOOL_BYTES = 16 * 1024 * 1024  # a part up to this size stays in memory; larger ones go to a temp file
MAX_HEADER_BYTES = 16 * 1024


class MalformedMultipart(ValueError):
    pass


class PartTooLarge(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("part too large")
        self.headers = headers


def iter_parts(stream: BinaryIO, boundary: bytes, *, max_part: int) -> Iterator[tuple[dict[str, str], BinaryIO]]:
    """Yield (headers, temp file at 0) per part; a part over ``max_part`` is drained and comes with an empty
    file and the header ``x-too-large``."""
    delim = b"--" + boundary
    sep = b"\r\n" + delim
    buf = b""
    eof = False

    def fill() -> bool:
        nonlocal buf, eof
        if eof:
            return False
        data = stream.read(CHUNK)
        if not data:
            eof = True
            return False
        buf += data
        return True

    # Preamble up to the first delimiter (which may start the body without a CRLF before it).
    while True:
        idx = buf.find(delim)
        if idx >= 0 and (idx == 0 or buf[idx - 2:idx] == b"\r\n"):
            buf = buf[idx + len(delim):]
            break
        if len(buf) > MAX_HEADER_BYTES:
            buf = buf[-len(delim):]
        if not fill():
            raise MalformedMultipart("no multipart boundary found")
    while True:
        while len(buf) < 2 and fill():
            pass
        if buf.startswith(b"--"):
            return
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEADER_BYTES or not fill():
                raise MalformedMultipart("part headers incomplete")
        header_block = buf[:end].decode("latin-1")
        buf = buf[end + 4:]
        headers: dict[str, str] = {}
        for line in header_block.split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        tmp = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115 - closed below or after the consumer is done
        size = 0
        too_large = False
        while True:
            idx = buf.find(sep)
            if idx >= 0:
                if not too_large:
                    tmp.write(buf[:idx])
                size += idx
                buf = buf[idx + len(sep):]
                break
            keep = len(sep) - 1
            if len(buf) > keep:
                out, buf = buf[:-keep], buf[-keep:]
                size += len(out)
                if size > max_part:
                    too_large = True
                if not too_large:
                    tmp.write(out)
            if not fill():
                tmp.close()
                raise MalformedMultipart("body ended before the closing boundary")
        if size > max_part:
            too_large = True
        if too_large:
            tmp.close()
            headers["x-too-large"] = "1"
            yield headers, io.BytesIO()
        else:
            tmp.seek(0)
            try:
                yield headers, tmp
            finally:
                tmp.close()
