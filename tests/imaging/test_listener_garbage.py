"""The DICOM listener survives hostile peers: garbage instead of an association is dropped, a C-STORE of a
broken dataset gets a failure status, and the next scanner is served as usual."""

from __future__ import annotations

import contextlib
import io
import socket
import warnings
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from tests.imaging.dicomgen import ct_slice
from tests.imaging.dimse import run


def _broken(change: Any) -> Dataset:
    ds = dcmread(io.BytesIO(ct_slice()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom doubts the broken values: that is the point
        change(ds)
    return ds


BROKEN = {
    "no study UID": lambda ds: delattr(ds, "StudyInstanceUID"),
    "not a UID": lambda ds: setattr(ds, "SeriesInstanceUID", "not-a-uid"),
    "pixel data cut short": lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]),
    "impossible size": lambda ds: setattr(ds, "Rows", 0),
}


def _echo_ok(port: int) -> bool:
    return run("echoscu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port)).returncode == 0


def test_garbage_instead_of_an_association(listener: Any) -> None:
    port, _ = listener
    for junk in (b"\x01\x00\x00\x00\xff\xff" + b"A" * 64, b"\x00" * 10, b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(junk)
            sock.settimeout(5)
            with contextlib.suppress(TimeoutError, ConnectionError):
                sock.recv(1024)
    assert _echo_ok(port)


def test_malformed_datasets_get_a_failure_status_and_the_listener_goes_on(listener: Any,
                                                                           tmp_path: Path) -> None:
    port, _ = listener
    ae = AE(ae_title="CLINICCT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="TOWNHEALTH")
    assert assoc.is_established
    try:
        for name, change in BROKEN.items():
            status = assoc.send_c_store(_broken(change))
            assert status and status.Status != 0x0000, name
    finally:
        assoc.release()
    assert _echo_ok(port)
    good = tmp_path / "good.dcm"
    good.write_bytes(ct_slice(patient_id="AFTER-GARBAGE"))
    out = run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), str(good))
    assert out.returncode == 0, out.stderr
