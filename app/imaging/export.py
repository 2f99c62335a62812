"""De-identified export (DICOM PS3.15 Annex E basic application level confidentiality profile)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset

from app.imaging import service
from app.imaging.models import Study

# Attributes the basic profile removes or replaces (a practical subset of Table E.1-1 covering what
# modalities write), plus every private tag and every curve/overlay comment.
REMOVE = (
    "AccessionNumber", "AdditionalPatientHistory", "AdmittingDiagnosesDescription", "Allergies",
    "CountryOfResidence", "CurrentPatientLocation", "DerivationDescription", "DeviceSerialNumber",
    "EthnicGroup", "ImageComments", "InstitutionAddress", "InstitutionName", "InstitutionalDepartmentName",
    "MedicalRecordLocator", "MilitaryRank", "NameOfPhysiciansReadingStudy", "Occupation",
    "OperatorsName", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAddress",
    "PatientAge", "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientReligiousPreference", "PatientSize", "PatientTelephoneNumbers",
    "PatientWeight", "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformingPhysicianName", "PhysiciansOfRecord", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "RequestAttributesSequence", "RequestingPhysician",
    "ScheduledProcedureStepDescription", "StationName", "StudyComments", "StudyID", "RequestedProcedureDescription",
)
EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyDate",
         "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ContentDate",
         "ContentTime", "AccessionNumber")
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
UID_ROOT = "2.25."


def _new_uid(salt: bytes, uid: str) -> str:
    """Same original UID → same replacement within one export, so the study stays consistent."""
    return UID_ROOT + str(int.from_bytes(hashlib.sha256(salt + uid.encode()).digest()[:16], "big"))


def deidentify(ds: Dataset, *, salt: bytes, pseudonym: str) -> Dataset:
    ds.remove_private_tags()
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY:
        if keyword in ds:
            setattr(ds, keyword, "")
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    for keyword in UIDS:
        if keyword in ds:
            setattr(ds, keyword, _new_uid(salt, str(getattr(ds, keyword))))
    if "SOPInstanceUID" in ds and ds.file_meta is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Annex E basic profile"
    seq_item = Dataset()
    seq_item.CodeValue = "113100"
    seq_item.CodingSchemeDesignator = "DCM"
    seq_item.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [seq_item]
    return ds


def write_deidentified_zip(study: Study, out: BinaryIO) -> int:
    """Write every instance, de-identified, into a zip; returns the count. The caller audits via get_study."""
    import secrets

    salt = secrets.token_bytes(16)
    pseudonym = "ANON-" + secrets.token_hex(4).upper()
    store = service.object_store()
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for s_index, series in enumerate(study.series, 1):
            for i_index, inst in enumerate(series.instances, 1):
                ds = pydicom.dcmread(io.BytesIO(store.read(inst.object_key)), force=True)
                deidentify(ds, salt=salt, pseudonym=pseudonym)
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                zf.writestr(f"series{s_index:03d}/image{i_index:05d}.dcm", buf.getvalue())
                count += 1
    return count
