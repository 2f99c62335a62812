"""Pixels for people: frames decoded (pylibjpeg family for compressed syntaxes) and windowed to 8 bits."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from app.imaging.dicomfile import UNCOMPRESSED

NUMPY_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16,
                (32, 0): np.uint32, (32, 1): np.int32}


def native_frame(header: Dataset, raw: bytes, *, big_endian: bool = False) -> np.ndarray[Any, Any] | None:
    """One uncompressed grayscale frame from its bytes, or None when the fast path does not apply."""
    bits, rep = int(header.get("BitsAllocated", 0)), int(header.get("PixelRepresentation", 0))
    dtype = NUMPY_DTYPES.get((bits, rep))
    if dtype is None or int(header.get("SamplesPerPixel", 1)) != 1:
        return None
    arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
    return arr.reshape(int(header.Rows), int(header.Columns))


def decoded_frame(ds: Dataset, frame: int) -> np.ndarray[Any, Any]:
    """Decode frame ``frame`` (0-based) of a full dataset, any supported transfer syntax."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        from pydicom.pixels import pixel_array

        return np.asarray(pixel_array(ds, index=frame))
    return np.asarray(ds.pixel_array)


def to_image(arr: np.ndarray[Any, Any], ds: Dataset, *, window: tuple[float, float] | None) -> Image.Image:
    """Apply the modality LUT (rescale) and a window, then 8 bits; colour images are passed through."""
    if arr.ndim == 3:
        photometric = str(ds.get("PhotometricInterpretation", "RGB"))
        if photometric.startswith("YBR") and str(ds.file_meta.get("TransferSyntaxUID", "")) in UNCOMPRESSED:
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        if arr.dtype != np.uint8:
            arr = (arr.astype(np.float32) * (255.0 / max(float(arr.max()), 1.0))).astype(np.uint8)
        return Image.fromarray(arr[..., :3], "RGB")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = arr.astype(np.float32)
    if slope != 1 or intercept != 0:
        values = values * slope + intercept
    if window is None:
        center, width = default_window(ds, values)
    else:
        center, width = window
    width = max(width, 1.0)
    low = center - width / 2
    out = np.clip((values - low) * (255.0 / width), 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out, "L")


def default_window(ds: Dataset, values: np.ndarray[Any, Any]) -> tuple[float, float]:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        if center is not None and width is not None:
            c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
            w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
            if w > 0:
                return c, w
    except (TypeError, ValueError):
        pass
    lo, hi = float(values.min()), float(values.max())
    return (lo + hi) / 2, max(hi - lo, 1.0)


def encode(image: Image.Image, media_type: str, *, quality: int = 90, viewport: tuple[int, int] | None = None) -> bytes:
    if viewport:
        image.thumbnail(viewport)
    buf = io.BytesIO()
    if media_type == "image/png":
        image.save(buf, "PNG", compress_level=1)
    else:
        image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
