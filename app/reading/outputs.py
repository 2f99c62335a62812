"""A signed report as a printable PDF (fpdf2, with its verification QR) and as a DICOM Encapsulated PDF written
back into the study through the normal ingest path, so QIDO/WADO and PACS peers see it beside the images."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import qrcode
import sqlalchemy as sa
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from fpdf import FPDF
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app import db
from app.audit import service as audit
from app.auth.models import User
from app.i18n import format_when
from app.imaging.ingest import store_one
from app.reading import service
from app.reading.models import Report

logger = logging.getLogger(__name__)

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
"""Debian's fonts-dejavu-core: a Unicode font, so any patient name prints. Without it, Helvetica (Latin-1)."""
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
"""Debian's fonts-wqy-microhei: Chinese (and Latin) glyphs, for reports printed in Chinese and Chinese names."""
CJK_LOCALES = ("zh",)


def cjk_font_available() -> bool:
    return CJK_FONT.exists()


class _Pdf(FPDF):
    def __init__(self, *, cjk: bool = False) -> None:
        super().__init__(format="A4")
        self.set_auto_page_break(auto=True, margin=18)
        regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
        if cjk:  # one weight only: bold text is set larger rather than in a bold face
            self.add_font("body", "", str(CJK_FONT))
            self.add_font("body", "B", str(CJK_FONT))
            self.family_name, self.unicode = "body", True
        elif regular.exists() and bold.exists():
            self.add_font("body", "", str(regular))
            self.add_font("body", "B", str(bold))
            self.family_name, self.unicode = "body", True
        else:
            self.family_name, self.unicode = "helvetica", False

    def text_of(self, text: str) -> str:
        return text if self.unicode else text.encode("latin-1", "replace").decode("latin-1")

    def para(self, text: str, *, size: int = 10, bold: bool = False) -> None:
        self.set_font(self.family_name, "B" if bold else "", size)
        self.multi_cell(0, size * 0.55, self.text_of(text), new_x="LMARGIN", new_y="NEXT")
        self.ln(1.5)


def _qr_png(payload: str) -> io.BytesIO:
    buf = io.BytesIO()
    qrcode.make(payload, box_size=4, border=2).save(buf)
    buf.seek(0)
    return buf


def pdf_bytes(report: Report, *, locale: str | None = None) -> bytes:
    """The signed report, its addenda and the QR code of its signature (verifiable offline), in ``locale`` (default:
    the request's language). Chinese needs the CJK font; without it the report prints in English."""
    locale = locale or str(get_locale() or "en")
    cjk = locale.startswith(CJK_LOCALES)
    if cjk and not cjk_font_available():
        logger.warning("no CJK font at %s: report %s printed in English", CJK_FONT, report.id)
        locale, cjk = "en", False
    with force_locale(locale):
        return _pdf_bytes(report, _Pdf(cjk=cjk))


def _pdf_bytes(report: Report, pdf: _Pdf) -> bytes:
    req, patient = report.request, report.request.patient
    pdf.add_page()
    pdf.para(_("Town Health · Imaging report #%(id)s", id=report.id), size=14, bold=True)
    pdf.para(_("%(given)s %(family)s · born %(born)s · MRN %(mrn)s", given=patient.given_name,
               family=patient.family_name, born=patient.birth_date.isoformat(), mrn=patient.mrn))
    study = req.study
    pdf.para(_("%(modality)s %(description)s · study date %(date)s · accession %(accession)s · sent by %(place)s",
               modality=req.modality or _("Study"), description=study.study_description or "",
               date=study.study_date.isoformat() if study.study_date else _("unknown"),
               accession=study.accession_number or _("none"), place=req.facility.name))
    if report.critical:
        pdf.para(_("CRITICAL RESULT"), size=12, bold=True)
    pdf.para(_("Clinical question"), bold=True)
    pdf.para(req.clinical_question)
    if report.patient_summary:
        pdf.para(_("Summary for the patient"), bold=True)
        pdf.para(report.patient_summary)
    pdf.para(_("Findings"), bold=True)
    pdf.para(report.findings)
    pdf.para(_("Impression"), bold=True)
    pdf.para(report.impression)
    if report.key_images:
        pdf.para(_("Key images: %(count)s (SOP Instance UIDs: %(uids)s)", count=len(report.key_images),
                   uids=", ".join(k["instance"] for k in report.key_images)), size=8)
    assert report.signed_at is not None
    zone = req.facility.timezone  # the printout is read at the clinic that asked for the report
    pdf.para(_("Signed electronically by %(name)s on %(when)s · SHA-256 %(hash)s · key %(key)s",
               name=report.author.full_name, when=format_when(report.signed_at, tz=zone), hash=report.content_hash,
               key=report.key_id), size=8)
    for version in report.addenda:
        pdf.para(_("Addendum by %(name)s, signed %(when)s", name=version.author.full_name,
                   when=format_when(version.created_at, tz=zone)), bold=True)
        pdf.para(version.text)
    payload = service.qr_payload(report)
    if payload:
        pdf.image(_qr_png(payload), w=45)
        pdf.para(_("Scan to verify the signature offline with the hospital's public key."), size=8)
    return bytes(pdf.output())


def dicom_bytes(report: Report, pdf: bytes) -> bytes:
    """An Encapsulated PDF instance in the report's study (its own series, modality DOC)."""
    req, study = report.request, report.request.study
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesNumber = 9000 + report.id % 1000
    ds.InstanceNumber = 1
    ds.SeriesDescription = "Signed report"
    ds.PatientID = study.dicom_patient_id or req.patient.mrn
    ds.PatientName = study.patient_name or f"{req.patient.family_name}^{req.patient.given_name}"
    ds.PatientBirthDate = study.patient_birth_date or req.patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = study.patient_sex or ""
    ds.StudyDate = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    ds.StudyTime = study.study_time or ""
    ds.AccessionNumber = study.accession_number or ""
    ds.StudyID = study.study_id or ""
    ds.ReferringPhysicianName = study.referring_physician_name or ""
    assert report.signed_at is not None
    ds.ContentDate = report.signed_at.strftime("%Y%m%d")
    ds.ContentTime = report.signed_at.strftime("%H%M%S")
    ds.AcquisitionDateTime = report.signed_at.strftime("%Y%m%d%H%M%S")
    ds.Manufacturer = "Town Health"
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = f"Imaging report {report.id}"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_back(report: Report, *, by: User) -> bool:
    """Store the signed report in its study as an Encapsulated PDF (object first, then its row, committed by the
    ingest path, as for any scan); returns whether it is there. Safe to call again: a report written once is
    not written twice."""
    if report.dicom_sop_instance_uid is not None or report.signed_at is None:
        return report.dicom_sop_instance_uid is not None
    data = dicom_bytes(report, pdf_bytes(report, locale=report.request.facility.default_locale))
    try:
        result = store_one(io.BytesIO(data), filename=f"report-{report.id}.dcm", by=None,
                           facility_id=report.request.facility_id, source="report",
                           actor_name=f"report {report.id} by {by.full_name}")
    except Exception:
        logger.exception("writing report %s into its study failed", report.id)
        db.rollback()
        return False
    if result.status != "stored":
        logger.warning("report %s was not stored in its study: %s", report.id, result.reason)
        return False
    report.dicom_sop_instance_uid = result.sop_instance_uid
    audit.record("reading.report.dicom", by=by, patient_id=report.request.patient_id, resource_type="DiagnosticReport",
                 resource_id=report.id, detail={"sop_instance_uid": result.sop_instance_uid})
    db.session.commit()
    return True


def write_back_pending(*, limit: int = 50) -> list[int]:
    """Store the signed reports whose DICOM copy is missing (a failed first attempt); periodic. Returns their ids."""
    pending = db.session.scalars(sa.select(Report).where(Report.signed_at.is_not(None),
                                                         Report.dicom_sop_instance_uid.is_(None))
                                 .order_by(Report.id).limit(limit)).all()
    return [r.id for r in pending if write_back(r, by=r.author)]
