"""Reading DICOM headers without loading pixel data, and the validation every ingest path shares."""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, AllTransferSyntaxes, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

KNOWN_TRANSFER_SYNTAXES = frozenset(str(ts) for ts in AllTransferSyntaxes)
UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
PIXEL_TAGS = {b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00"}
UNDEFINED = 0xFFFFFFFF
MAX_DIMENSION = 65535
MAX_FRAMES = 100_000


class Rejected(Exception):
    """The file cannot be stored; ``reason`` is shown to the sender (no patient data in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Header:
    dataset: Dataset
    transfer_syntax_uid: str
    pixel_data_offset: int | None
    pixel_data_length: int | None
    size: int
    has_pixels: bool = True

    def get(self, keyword: str, max_len: int | None = None) -> str | None:
        value = self.dataset.get(keyword)
        if value is None or value == "":
            return None
        text = str(value).strip().replace("\x00", "")
        if not text:
            return None
        return text[:max_len] if max_len else text

    def get_int(self, keyword: str) -> int | None:
        try:
            value = self.dataset.get(keyword)
            return None if value in (None, "") else int(value)
        except (TypeError, ValueError):
            return None

    @property
    def study_date(self) -> date | None:
        return parse_da(self.get("StudyDate"))


def parse_da(text: str | None) -> date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date; None when absent or malformed."""
    if not text or len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _check_fragments(fh: BinaryIO, offset: int, size: int, big: bool) -> None:
    """Walk the encapsulated items (seeking, not reading) to the sequence delimiter."""
    fmt = ">HHI" if big else "<HHI"
    pos = offset
    for _ in range(MAX_FRAMES + 2):
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            raise Rejected("truncated pixel data")
        group, elem, length = struct.unpack(fmt, head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return
        if (group, elem) != (0xFFFE, 0xE000) or length == UNDEFINED:
            raise Rejected("malformed compressed pixel data")
        pos += 8 + length
        if pos > size:
            raise Rejected("truncated pixel data")
    raise Rejected("too many pixel data fragments")


def is_image_class(sop_class_uid: str) -> bool:
    """Whether objects of this storage class must carry pixel data (CT, MR, secondary capture, ...)."""
    return "Image Storage" in UID(sop_class_uid).name


def _is_uid(value: Any) -> bool:
    text = str(value or "")
    return 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text) and ".." not in text


def read_header(fh: BinaryIO, size: int | None = None) -> Header:
    """Parse and validate the header of the file open in ``fh`` (positioned at 0).

    :raises Rejected: with a reason a person can act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values in senders' files are judged below, not warned about
        return _read_header(fh, size)


def _read_header(fh: BinaryIO, size: int | None) -> Header:
    if size is None:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
    try:
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        except InvalidDicomError:
            # No preamble: accept a bare implicit-VR dataset that starts with a group 0008 element.
            fh.seek(0)
            if fh.read(2) != b"\x08\x00":
                raise Rejected("not a DICOM file") from None
            fh.seek(0)
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        pos = fh.tell()
    except Rejected:
        raise
    except Exception:  # noqa: BLE001 - pydicom raises many types on malformed input
        raise Rejected("truncated or corrupt DICOM file") from None
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    if not ts:
        if meta is not None and len(meta) > 0:
            raise Rejected("file meta information has no transfer syntax")
        ts = str(ImplicitVRLittleEndian)
    if ts not in KNOWN_TRANSFER_SYNTAXES:
        raise Rejected("unsupported transfer syntax")
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            value = ds.get(keyword)
        except Exception:  # noqa: BLE001
            value = None
        if not value:
            raise Rejected(f"missing required {keyword}")
        if not _is_uid(value):
            raise Rejected(f"{keyword} is not a valid UID")
    offset = length = None
    has_pixels = True
    if ts == str(DeflatedExplicitVRLittleEndian):
        fh.seek(0)
        try:
            full = pydicom.dcmread(fh)
        except Exception:  # noqa: BLE001
            raise Rejected("truncated or corrupt DICOM file") from None
        has_pixels = "PixelData" in full
    else:
        fh.seek(pos)
        head = fh.read(12)
        has_pixels = len(head) >= 8 and head[:4] in PIXEL_TAGS
    if not has_pixels:
        # Reports, key images, presentation states, RT plans, waveforms, PDFs: stored like images, shown apart.
        if is_image_class(str(ds.SOPClassUID)):
            raise Rejected("an image object without pixel data")
        return Header(dataset=ds, transfer_syntax_uid=ts, pixel_data_offset=None, pixel_data_length=None,
                      size=size, has_pixels=False)
    if ts != str(DeflatedExplicitVRLittleEndian):
        big = ts == "1.2.840.10008.1.2.2"
        # Judge by the bytes: some writers encode implicit VR under an explicit transfer syntax, or vice versa.
        explicit = head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN")
        if explicit:
            length = struct.unpack(">I" if big else "<I", head[8:12])[0]
            offset = pos + 12
        else:
            length = struct.unpack("<I", head[4:8])[0]
            offset = pos + 8
        if length == UNDEFINED:
            length = None
            _check_fragments(fh, offset, size, big)
        elif offset + length > size:
            raise Rejected("truncated pixel data")
    header = Header(dataset=ds, transfer_syntax_uid=ts, pixel_data_offset=offset, pixel_data_length=length,
                    size=size)
    rows, cols = header.get_int("Rows"), header.get_int("Columns")
    frames = header.get_int("NumberOfFrames") or 1
    if not rows or not cols or rows > MAX_DIMENSION or cols > MAX_DIMENSION:
        raise Rejected("image size (Rows/Columns) is missing or out of range")
    if frames < 1 or frames > MAX_FRAMES:
        raise Rejected("NumberOfFrames is out of range")
    if ts in UNCOMPRESSED and length is not None:
        bits = header.get_int("BitsAllocated") or 0
        spp = header.get_int("SamplesPerPixel") or 1
        expected = rows * cols * frames * spp * bits // 8
        if header.get("PhotometricInterpretation") in ("YBR_FULL_422", "YBR_PARTIAL_422"):
            expected = expected * 2 // 3
        if bits == 0 or length < expected:
            raise Rejected("pixel data is shorter than the image size says")
    return header
