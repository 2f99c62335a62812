"""When two files hold the same SOP instance: compared on the decoded dataset, not on file bytes.

A PACS or a router that re-sends an instance often changes its bytes without changing the instance: another
transfer syntax (JPEG lossless instead of uncompressed, deflate), other file meta (its own implementation UID,
source AE), other group lengths or padding. Such a copy is "already stored". A copy whose attributes or pixel
values differ is another object under the same SOP Instance UID, a conflict.

The fingerprint is a SHA-256 over

- every data element outside the file meta, in a canonical encoding (implicit VR little endian, so a private
  element read as UN and the same one read with its VR give the same bytes), leaving out group lengths, trailing
  padding and the attributes that only describe how pixels are encoded (photometric interpretation after a
  colour transform, planar configuration, lossy-compression notes), and
- the decoded pixel values (dtype, shape, little-endian bytes), so a lossless re-encoding matches and a lossy one,
  which by the standard needs a new SOP Instance UID, does not.

It is computed only when a file arrives under a SOP Instance UID already stored and its bytes differ from the
stored file's: equal file bytes (the common re-send) are settled by the SHA-256 already kept for every object,
so the hot path decodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

logger = logging.getLogger(__name__)

ENCODING_ONLY = frozenset({
    0x00280004,  # Photometric Interpretation (YBR after JPEG, RGB once decoded)
    0x00280006,  # Planar Configuration
    0x00282110,  # Lossy Image Compression
    0x00282112,  # Lossy Image Compression Ratio
    0x00282114,  # Lossy Image Compression Method
    0x7FE00008, 0x7FE00009, 0x7FE00010,  # pixel data (compared decoded, below)
    0xFFFCFFFC,  # Data Set Trailing Padding
})


def _attributes(ds: Dataset) -> bytes:
    kept = Dataset()
    for elem in ds:
        if elem.tag.element == 0 or int(elem.tag) in ENCODING_ONLY:
            continue
        kept.add(elem)
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = True, True
    write_dataset(buf, kept)
    return buf.getvalue()


def _pixels(ds: Dataset) -> bytes:
    if not any(t in ds for t in (0x7FE00008, 0x7FE00009, 0x7FE00010)):
        return b""
    try:
        arr = np.ascontiguousarray(ds.pixel_array)
    except Exception:  # noqa: BLE001 - no decoder for this syntax: the encoded bytes must then be equal
        logger.info("pixel data could not be decoded for comparison; comparing the encoded bytes")
        return b"encoded:" + str(ds.file_meta.get("TransferSyntaxUID", "")).encode() + bytes(ds.PixelData)
    little = arr.astype(arr.dtype.newbyteorder("<"))
    return f"{little.dtype.str}{arr.shape}".encode() + little.tobytes()


def content_fingerprint(fh: BinaryIO) -> str:
    """The fingerprint of the DICOM file open in ``fh`` (see the module docstring)."""
    fh.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fh, force=True)
        digest = hashlib.sha256(_attributes(ds))
        digest.update(hashlib.sha256(_pixels(ds)).digest())
    return digest.hexdigest()


def same_instance(new: BinaryIO, stored: BinaryIO) -> bool:
    """Whether two files whose bytes differ hold the same instance (a re-send) rather than two objects."""
    try:
        return content_fingerprint(new) == content_fingerprint(stored)
    except Exception:  # noqa: BLE001 - an unreadable copy is not the same instance; the original is kept
        logger.warning("comparing a re-sent instance with the stored one failed", exc_info=True)
        return False
