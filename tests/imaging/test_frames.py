"""WADO-RS frames byte for byte: uncompressed frames are ranged reads at the Pixel Data offset indexed at ingest,
compressed ones the fragments of their frame; both must be exactly what pydicom finds in the object."""

from __future__ import annotations

import io
import json
from email import message_from_bytes
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.imaging.dicomgen import stow_body

AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _multi_frame(*, frames: int, rows: int, cols: int, bits: int, samples: int = 1) -> bytes:
    """A multi-frame secondary capture with distinct pixels in every frame (odd sizes: padding must not shift
    any frame)."""
    meta = FileMetaDataset()
    sop_class = "1.2.840.10008.5.1.4.1.1.7.3" if bits == 16 else "1.2.840.10008.5.1.4.1.1.7.4"
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = "FRAMES1", "Frames^Test"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OT", 1, 1
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    dtype = np.uint16 if bits == 16 else np.uint8
    shape = (frames, rows, cols) + ((samples,) if samples > 1 else ())
    arr = (np.arange(int(np.prod(shape)), dtype=np.uint32) * 7919 % (2 ** bits)).astype(dtype).reshape(shape)
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _rle(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(RLELossless)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _expected_frames(data: bytes) -> list[bytes]:
    """Each frame as pydicom reads it from the object: a slice of native Pixel Data, or a frame's fragments."""
    ds = pydicom.dcmread(io.BytesIO(data))
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=n))
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[i * size:(i + 1) * size] for i in range(n)]


def _parts(resp: Any) -> list[bytes]:
    msg = message_from_bytes(f"Content-Type: {resp.headers['Content-Type']}\r\n\r\n".encode() + resp.data)
    return [part.get_payload(decode=True) for part in msg.get_payload()]


def _frames_url(client: Any, data: bytes) -> str:
    body, ctype = stow_body([data])
    out = json.loads(client.post("/dicomweb/studies", data=body, content_type=ctype).data)
    study = out["00081199"]["Value"][0]["00081190"]["Value"][0].split("/studies/")[1].split("/")[0]
    sop = out["00081199"]["Value"][0]["00081155"]["Value"][0]
    found = json.loads(client.get(f"/dicomweb/studies/{study}/instances?SOPInstanceUID={sop}").data)
    series = found[0]["0020000E"]["Value"][0]
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames"


def _bundled(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    if not path:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(path).read_bytes()


@pytest.mark.parametrize("make", [
    lambda: _multi_frame(frames=3, rows=5, cols=7, bits=8),  # 35-byte frames: odd, padded at the end only
    lambda: _multi_frame(frames=4, rows=17, cols=9, bits=16),
    lambda: _multi_frame(frames=2, rows=3, cols=5, bits=8, samples=3),
    lambda: _rle(_multi_frame(frames=3, rows=16, cols=12, bits=16)),
    lambda: _bundled("SC_rgb_rle_2frame.dcm"),
    lambda: _bundled("MR_small.dcm"),
], ids=["8bit-odd", "16bit", "rgb", "rle-multiframe", "rle-rgb-bundled", "single-native"])
def test_each_frame_is_byte_for_byte_what_pydicom_reads(client: Any, factories: Any, login: Any,
                                                        make: Any) -> None:
    login(client, factories.nurse())
    data = make()
    expected = _expected_frames(data)
    url = _frames_url(client, data)
    for number, frame in enumerate(expected, start=1):
        resp = client.get(f"{url}/{number}", headers={"Accept": AS_STORED})
        assert resp.status_code == 200, resp.data[:200]
        assert _parts(resp) == [frame], f"frame {number}"
    if len(expected) > 1:  # several frames in one request come in the order asked
        resp = client.get(f"{url}/{len(expected)},1", headers={"Accept": AS_STORED})
        assert _parts(resp) == [expected[-1], expected[0]]
    assert client.get(f"{url}/{len(expected) + 1}", headers={"Accept": AS_STORED}).status_code == 404
