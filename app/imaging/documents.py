"""Objects without pixels shown to people: the PDF inside an encapsulated PDF, a structured report as text.

Dose reports, key-image notes and other SR documents are trees of coded items; :func:`sr_lines` flattens one to
indented "concept: value" lines, which is what a reader needs from them. Other objects (presentation states, RT,
waveforms) are stored and served over DICOMweb, and the viewer says it cannot show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, EncapsulatedPDFStorage

MAX_LINES = 5000  # a report longer than this is cut (the object itself is untouched)


def kind_of(sop_class_uid: str, *, has_pixels: bool) -> str:
    """``image``, ``pdf``, ``sr`` or ``other``: how the viewer shows an object."""
    if has_pixels:
        return "image"
    if sop_class_uid == EncapsulatedPDFStorage:
        return "pdf"
    name = UID(sop_class_uid).name
    if name.endswith("SR Storage") or name == "Key Object Selection Document Storage":
        return "sr"
    return "other"


def class_name(sop_class_uid: str) -> str:
    """The storage class in words (``X-Ray Radiation Dose SR Storage``), or the UID when unknown."""
    return UID(sop_class_uid).name


def pdf_bytes(ds: Dataset) -> bytes:
    """The PDF of an encapsulated PDF object, without the padding byte DICOM adds to odd lengths."""
    data = bytes(ds.get("EncapsulatedDocument", b"") or b"")
    length = ds.get("EncapsulatedDocumentLength")
    if length and 0 < int(length) <= len(data):
        return data[:int(length)]
    return data[:-1] if data.endswith(b"\x00") else data


@dataclass
class Line:
    depth: int
    name: str
    value: str


def _meaning(seq: Any) -> str:
    item = seq[0] if seq else None
    return str(item.get("CodeMeaning", "") or item.get("CodeValue", "")) if item is not None else ""


def _value(item: Dataset) -> str:
    kind = str(item.get("ValueType", ""))
    if kind == "TEXT":
        return str(item.get("TextValue", ""))
    if kind == "NUM":
        measured = item.get("MeasuredValueSequence")
        if not measured:
            return ""
        units = _meaning(measured[0].get("MeasurementUnitsCodeSequence"))
        return f"{measured[0].get('NumericValue', '')} {units}".strip()
    if kind == "CODE":
        return _meaning(item.get("ConceptCodeSequence"))
    if kind in ("DATETIME", "DATE", "TIME", "UIDREF", "PNAME"):
        keyword = {"DATETIME": "DateTime", "DATE": "Date", "TIME": "Time", "UIDREF": "UID",
                   "PNAME": "PersonName"}[kind]
        return str(item.get(keyword, ""))
    if kind in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        refs = item.get("ReferencedSOPSequence") or []
        return f"reference to {class_name(str(refs[0].ReferencedSOPClassUID))}" if refs else "reference"
    return ""


def sr_lines(ds: Dataset) -> list[Line]:
    """The content tree of a structured report as indented lines, root title first."""
    lines = [Line(0, _meaning(ds.get("ConceptNameCodeSequence")) or class_name(str(ds.SOPClassUID)), "")]
    stack: list[tuple[int, Any]] = [(1, iter(ds.get("ContentSequence") or []))]
    while stack and len(lines) < MAX_LINES:
        depth, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        lines.append(Line(depth, _meaning(item.get("ConceptNameCodeSequence")), _value(item)))
        if item.get("ContentSequence"):
            stack.append((depth + 1, iter(item.ContentSequence)))
    return lines
