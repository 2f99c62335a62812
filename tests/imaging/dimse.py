"""Helpers for tests that talk DICOM over TCP: dcmtk tools and a pynetdicom SCU."""

from __future__ import annotations

import io
import socket
import subprocess
from typing import Any

from pydicom import dcmread


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool; its exit code and output are the test's to judge."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


def c_store(port: int, data: bytes, *, calling: str = "CLINICCT", syntax: str | None = None) -> Any:
    """Send one file with pynetdicom's SCU and return the status dataset (to read the Error Comment)."""
    from pynetdicom import AE

    ds = dcmread(io.BytesIO(data))
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, syntax or ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="TOWNHEALTH")
    assert assoc.is_established
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()
