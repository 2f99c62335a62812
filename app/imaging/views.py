"""Scan pages: upload (clinic staff), unmatched-study reconciliation, the viewer, de-identified export."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from app import db
from app.auth.decorators import roles_required
from app.auth.models import Role
from app.errors import AppError, PayloadTooLarge, ValidationFailed
from app.facilities import service as facilities
from app.i18n import format_when, zone_of
from app.imaging import access, documents, export, orders, service
from app.imaging.dicomfile import parse_da
from app.imaging.dimse import peers
from app.imaging.forms import ImagingOrderForm, PeerForm
from app.imaging.ingest import ingest_files
from app.imaging.models import DicomPeer, ImagingOrder, Study
from app.patients import service as patients
from app.transactions import commit_at_request_end, error_message, flash_outcome, submit

bp = commit_at_request_end(Blueprint("imaging", __name__, template_folder="templates", static_folder="static",
                                     static_url_path="/static/imaging"))


DOCUMENT_LABELS = {"pdf": "PDF", "sr": "Report", "other": "Object"}  # series thumbnails of objects without pixels
W_L_PRESETS = {"Lung": (-600, 1500), "Bone": (400, 1800), "Brain": (40, 80), "Abdomen": (50, 400)}


@bp.app_template_global()
def imaging_studies(patient: Any) -> list[Study]:
    """Studies shown on a chart the viewer already opened (the chart read is audited there)."""
    if not current_user.is_authenticated or current_user.role not in service.VIEW_ROLES:
        return []
    return service.studies_for_patient(patient, by=current_user)


@bp.app_template_filter("dicom_date")
def dicom_date(text: str | None) -> str:
    """A DICOM date (``19480302``) the way every page shows dates (``1948-03-02``)."""
    parsed = parse_da(text)
    return parsed.isoformat() if parsed else (text or "—")


@bp.app_template_global()
def imaging_orders(patient: Any) -> list[ImagingOrder]:
    """Requested imaging procedures on a chart the viewer already opened."""
    if not current_user.is_authenticated:
        return []
    return orders.orders_for_patient(patient, by=current_user)


@bp.app_template_global()
def imaging_order_form() -> ImagingOrderForm:
    form = ImagingOrderForm(formdata=None)
    form.read_assigned_to_id.choices = [*form.read_assigned_to_id.choices,
                                        *((str(d.id), d.full_name) for d in patients.doctors_for_assignment())]
    return form


def _reading_ask(form: ImagingOrderForm) -> orders.ReadingAsk | None:
    if not form.read.data:
        return None
    doctor = form.read_assigned_to_id.data or ""
    return orders.ReadingAsk(priority=form.read_priority.data or "", question=form.read_question.data or "",
                             assigned_to_id=int(doctor) if doctor.isdigit() else None)


def _in_own_zone(local: datetime) -> datetime:
    """A date and time typed into the form is the user's own wall-clock time."""
    return local.replace(tzinfo=ZoneInfo(zone_of(current_user))).astimezone(UTC)


@bp.post("/patients/<int:patient_id>/imaging-orders")
@roles_required(Role.CLINIC_STAFF)
def request_imaging(patient_id: int) -> BaseResponse:
    """Request an imaging procedure: it appears on the clinic scanner's worklist."""
    patient = patients.get_patient(patient_id, by=current_user, action="patient.read", audit_read=False)
    form = ImagingOrderForm()
    if not form.validate_on_submit() or form.scheduled_at.data is None:
        flash(_("Choose a modality, describe the procedure and give the date and time."), "error")
        return redirect(url_for("patients.chart", patient_id=patient.id))
    try:
        order = orders.create_order(patient, by=current_user, modality=form.modality.data or "",
                                    description=form.description.data or "",
                                    scheduled_at=_in_own_zone(form.scheduled_at.data),
                                    read=_reading_ask(form))
    except AppError as exc:
        db.rollback()
        flash(error_message(exc), "error")
        return redirect(url_for("patients.chart", patient_id=patient.id))
    reading = " " + _("It will be sent to be read when the scan arrives.") if order.asks_to_be_read else ""
    flash(_("%(modality)s requested for %(when)s, accession %(accession)s: it is on the scanner's worklist.",
            modality=order.modality, when=format_when(order.scheduled_at),
            accession=order.accession_number) + reading, "success")
    return redirect(url_for("patients.chart", patient_id=patient.id))


@bp.app_template_global()
def can_reconcile_study(study: Study) -> bool:
    return current_user.is_authenticated and access.can_reconcile(study, current_user)


def _summary_row(r: service.IngestResult) -> dict[str, Any]:
    matched = r.patient_id is not None if r.ok else None
    return {"file": r.filename, "status": r.status, "reason": r.reason, "matched": matched,
            "read_url": url_for("reading.new", study_uid=r.study_instance_uid) if matched else None}


@bp.route("/scans/upload", methods=["GET", "POST"])
@roles_required(Role.CLINIC_STAFF)
def upload() -> str | Response:
    """Several .dcm files or a .zip of a study folder; a summary of stored / duplicate / rejected."""
    if request.method == "GET":
        return render_template("imaging/upload.html", results=None,
                               max_bytes=current_app.config["IMAGING_MAX_UPLOAD_BYTES"])
    if (request.content_length or 0) > current_app.config["IMAGING_MAX_UPLOAD_BYTES"]:
        raise PayloadTooLarge("The upload is larger than the configured limit.")
    files = [(f.filename or "upload", f.stream) for f in request.files.getlist("files") if f.filename]
    results = ingest_files(files, by=current_user, facility_id=current_user.facility_id, source="upload")
    rows = [_summary_row(r) for r in results]
    counts = {k: sum(1 for r in results if r.status == k) for k in ("stored", "duplicate", "conflict", "rejected")}
    if request.accept_mimetypes.best == "application/json" or request.headers.get("X-Requested-With"):
        return jsonify({"results": rows, "counts": counts})
    return render_template("imaging/upload.html", results=rows, counts=counts,
                           max_bytes=current_app.config["IMAGING_MAX_UPLOAD_BYTES"])


@bp.get("/scans/unmatched")
@roles_required(Role.CLINIC_STAFF)
def unmatched() -> str:
    studies = service.unmatched_studies(by=current_user)
    return render_template("imaging/unmatched.html", studies=studies)


@bp.route("/scans/studies/<int:study_id>/link", methods=["GET", "POST"])
@roles_required(Role.CLINIC_STAFF)
def link(study_id: int) -> str | BaseResponse:
    """File (or move) a scan: both identities side by side, then an explicit confirmation."""
    form = request.form if request.method == "POST" else request.args
    mrn = form.get("mrn", "").strip()
    if request.method == "POST" and form.get("confirmed") == "yes":
        try:
            study = service.link_study(study_id, mrn=mrn, by=current_user,
                                       accept_mismatches=form.get("accept_mismatches") == "yes")
        except ValidationFailed as exc:
            db.rollback()
            return _link_page(study_id, mrn, errors=exc.errors or {}, status=422)
        flash(_("Scan filed to this patient's chart."), "success")
        return redirect(url_for("patients.chart", patient_id=study.patient_id))
    return _link_page(study_id, mrn)


def _link_page(study_id: int, mrn: str, *, errors: dict[str, list[str]] | None = None,
               status: int = 200) -> tuple[str, int]:
    errors = dict(errors or {})
    preview = study = None
    if mrn:
        try:
            preview = service.preview_link(study_id, mrn=mrn, by=current_user)
        except ValidationFailed as exc:
            errors.update(exc.errors or {})
            status = 422
    if preview is None:
        study = service.study_to_reconcile(study_id, by=current_user)
    return render_template("imaging/link.html", preview=preview, study=preview.study if preview else study,
                           mrn=mrn, errors=errors), status


@bp.post("/scans/studies/<int:study_id>/unlink")
@roles_required(Role.CLINIC_STAFF)
def unlink(study_id: int) -> BaseResponse:
    """Take a misfiled scan off a chart; it waits again under Unmatched scans."""
    study = service.study_to_reconcile(study_id, by=current_user)
    chart = study.patient_id
    if flash_outcome(lambda: service.unlink_study(study_id, by=current_user),
                     _("Scan taken off the chart. It is back under Unmatched scans.")):
        return redirect(url_for("imaging.unmatched"))
    return redirect(url_for("patients.chart", patient_id=chart) if chart else url_for("imaging.unmatched"))


@bp.get("/scans/studies/<study_uid>")
@roles_required(Role.DOCTOR, Role.CLINIC_STAFF, Role.PATIENT)
def viewer(study_uid: str) -> str:
    """The built-in viewer; pixels come from the DICOMweb rendered endpoint."""
    study = service.get_study(study_uid, by=current_user, action="imaging.study.view")
    context = viewer_context(study)
    return render_template("imaging/viewer.html", **context)


def viewer_context(study: Study) -> dict[str, Any]:
    """What ``imaging/viewer.html`` needs for a study already opened (and audited) by the caller; pages that
    extend the viewer (the report editor) use it too. Objects without pixels (reports, PDFs) are not slices:
    the viewer shows them in a frame (see :func:`document`)."""
    series = [{"uid": s.series_instance_uid, "description": s.series_description or "", "modality": s.modality or "",
               "number": s.series_number, "label": DOCUMENT_LABELS.get(s.instances[0].kind, "") if s.instances else "",
               "instances": [{"uid": i.sop_instance_uid, "frames": i.number_of_frames, "kind": i.kind,
                              "document": url_for("imaging.document", study_uid=study.study_instance_uid,
                                                  sop_uid=i.sop_instance_uid)}
                             for i in s.instances]}
              for s in study.series]
    return {"study": study, "series": series, "presets": W_L_PRESETS}


@bp.get("/scans/studies/<study_uid>/instances/<sop_uid>/document")
@roles_required(Role.DOCTOR, Role.CLINIC_STAFF, Role.PATIENT)
def document(study_uid: str, sop_uid: str) -> Response | str:
    """An object without pixels, framed by the viewer: the PDF inline, a report as text, else a short note."""
    inst, ds = service.read_document(study_uid, sop_uid, by=current_user)
    kind = inst.kind
    if kind == "pdf":
        resp = Response(documents.pdf_bytes(ds), mimetype="application/pdf")
        resp.headers["Content-Disposition"] = 'inline; filename="document.pdf"'
    else:
        lines = documents.sr_lines(ds) if kind == "sr" else []
        resp = Response(render_template("imaging/document.html", kind=kind, lines=lines,
                                        class_name=documents.class_name(inst.sop_class_uid)))
    # Shown in a frame of the viewer page, and only there.
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'self'; frame-ancestors 'self'"
    resp.headers["X-Frame-Options"] = "SAMEORIGIN"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/scans/studies/<study_uid>/export.zip")
@roles_required(Role.DOCTOR, Role.CLINIC_STAFF)
def export_study(study_uid: str) -> Response:
    """A de-identified copy of the study (PS3.15 basic profile), for a second opinion."""
    study = service.get_study(study_uid, by=current_user, action="imaging.study.export")
    tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the streaming generator
    export.write_deidentified_zip(study, tmp)
    size = tmp.seek(0, 2)
    tmp.seek(0)

    def chunks() -> Any:
        with tmp:
            while data := tmp.read(1024 * 1024):
                yield data

    resp = Response(chunks(), mimetype="application/zip")
    resp.headers["Content-Disposition"] = 'attachment; filename="study-deidentified.zip"'
    resp.headers["Content-Length"] = str(size)
    return resp


# ---------------------------------------------------------------- DICOM peers (admins)


def _peer_form(peer: DicomPeer | None = None) -> PeerForm:
    form = PeerForm(obj=peer)
    form.facility_id.choices = [(f.id, f.name) for f in facilities.list_facilities()]
    return form


def _save_peer(form: PeerForm, peer: DicomPeer | None) -> DicomPeer | None:
    """Save the submitted form; None (with the errors on the form) when the service refused it."""
    saved: list[DicomPeer] = []
    submit(form, lambda: saved.append(peers.save_peer(
        peer, by=current_user, ae_title=form.ae_title.data or "", host=form.host.data or "", port=form.port.data,
        facility_id=form.facility_id.data or 0, description=form.description.data or "",
        active=bool(form.active.data), permissions={p for p in peers.PERMISSIONS if getattr(form, f"can_{p}").data})))
    return saved[0] if saved else None


@bp.route("/admin/dicom-peers", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def dicom_peers() -> BaseResponse | tuple[str, int]:
    """The known AE titles; a new one is added below the list."""
    form = _peer_form()
    status = 200
    if form.validate_on_submit():
        saved = _save_peer(form, None)
        if saved is not None:
            flash(_("DICOM peer %(ae_title)s added.", ae_title=saved.ae_title), "success")
            return redirect(url_for("imaging.dicom_peers"))
        status = 422
    elif request.method == "POST":
        status = 422
    items = peers.list_peers(by=current_user)
    return render_template("imaging/dicom_peers.html", peers=items, form=form,
                           listener=current_app.config["DICOM_AE_TITLE"]), status


@bp.route("/admin/dicom-peers/<int:peer_id>", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def dicom_peer(peer_id: int) -> BaseResponse | tuple[str, int]:
    peer = peers.get_peer(peer_id, by=current_user)
    form = _peer_form(peer)
    status = 200
    if form.validate_on_submit():
        if _save_peer(form, peer) is not None:
            flash(_("DICOM peer %(ae_title)s saved; the listener uses the change within seconds.",
                    ae_title=peer.ae_title), "success")
            return redirect(url_for("imaging.dicom_peers"))
        status = 422
    elif request.method == "POST":
        status = 422
    return render_template("imaging/dicom_peer.html", peer=peer, form=form), status
