"""Generated DICOM files for tests and benchmarks (real files written by pydicom)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid


def new_dataset(sop_class: str, *, sop_uid: str | None = None, study_uid: str | None = None,
                series_uid: str | None = None) -> Dataset:
    """A dataset with its file meta and UIDs (fresh ones unless given), in explicit VR little endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    return ds


def ct_slice(*, patient_id: str = "UNKNOWN1", patient_name: str = "Doe^Jane", study_uid: str | None = None,
             series_uid: str | None = None, sop_uid: str | None = None, number: int = 1, size: int = 64,
             study_date: str = "20240115", accession: str = "ACC1", description: str = "CT CHEST",
             series_description: str = "Axial", modality: str = "CT", seed: int = 0,
             extra: dict[str, object] | None = None) -> bytes:
    """One 16-bit CT slice; HU values with a bright square so windowing is visible. ``extra`` sets more
    attributes by keyword (or overrides these)."""
    ds = new_dataset(CTImageStorage, sop_uid=sop_uid, study_uid=study_uid, series_uid=series_uid)
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.SeriesDescription = series_description
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.InstitutionName = "Town Clinic"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    rng = np.random.default_rng(seed + number)
    arr = rng.integers(900, 1100, (size, size), dtype=np.int16)
    q = size // 4
    arr[q:3 * q, q:3 * q] = 2500
    ds.PixelData = arr.tobytes()
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def stow_body(files: list[bytes], boundary: str = "dicomboundary") -> tuple[bytes, str]:
    parts = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
                     for f in files)
    return parts + f"--{boundary}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def bundled_copy(name: str, *, patient_id: str | None = None, study_uid: str | None = None) -> bytes:
    """One of pydicom's bundled test files under fresh UIDs (pixel data and transfer syntax kept as they are)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    ds = dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:  # some bundled files are bare implicit-VR datasets
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if patient_id is not None:
        ds.PatientID = patient_id
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def document(kind: str, *, patient_id: str = "UNKNOWN1", study_uid: str | None = None,
             sop_uid: str | None = None, text: str = "CTDIvol 12.5 mGy") -> bytes:
    """A non-image object a scanner or a PACS sends along with images: ``dose-sr`` (X-Ray Radiation Dose SR),
    ``kos`` (key object selection), ``gsps`` (grayscale presentation state) or ``pdf`` (encapsulated PDF)."""
    from pydicom.uid import (
        EncapsulatedPDFStorage,
        GrayscaleSoftcopyPresentationStateStorage,
        KeyObjectSelectionDocumentStorage,
        XRayRadiationDoseSRStorage,
    )

    sop_class, modality = {"dose-sr": (XRayRadiationDoseSRStorage, "SR"),
                           "kos": (KeyObjectSelectionDocumentStorage, "KO"),
                           "gsps": (GrayscaleSoftcopyPresentationStateStorage, "PR"),
                           "pdf": (EncapsulatedPDFStorage, "DOC")}[kind]
    ds = new_dataset(sop_class, sop_uid=sop_uid, study_uid=study_uid)
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = patient_id, "Doe^Jane", "20240115", "101500"
    ds.AccessionNumber, ds.StudyDescription, ds.Modality = "ACC1", "CT CHEST", modality
    ds.SeriesNumber, ds.InstanceNumber = 99, 1
    ds.SeriesDescription = {"dose-sr": "Dose Report", "kos": "Key images", "gsps": "Presentation",
                            "pdf": "Referral letter"}[kind]
    if kind in ("dose-sr", "kos"):
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.ConceptNameCodeSequence = [_code("113701", "DCM", "X-Ray Radiation Dose Report") if kind == "dose-sr"
                                      else _code("113000", "DCM", "Of Interest")]
        note = Dataset()
        note.RelationshipType, note.ValueType = "CONTAINS", "TEXT"
        note.ConceptNameCodeSequence = [_code("121106", "DCM", "Comment")]
        note.TextValue = text
        dose = Dataset()
        dose.RelationshipType, dose.ValueType = "CONTAINS", "NUM"
        dose.ConceptNameCodeSequence = [_code("113830", "DCM", "Mean CTDIvol")]
        measured = Dataset()
        measured.NumericValue = "12.5"
        measured.MeasurementUnitsCodeSequence = [_code("mGy", "UCUM", "mGy")]
        dose.MeasuredValueSequence = [measured]
        ds.ContentSequence = [note, dose]
    elif kind == "gsps":
        ds.PresentationLUTShape = "IDENTITY"
        ds.ContentLabel = "VIEW"
    else:
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.DocumentTitle = "Referral letter"
        ds.BurnedInAnnotation = "YES"
        pdf = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>"
               b"endobj 3 0 obj<</Type/Page/MediaBox[0 0 200 200]/Parent 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n"
               b"%%EOF\n")
        ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
