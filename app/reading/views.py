"""Reading pages: send a study to be read (clinic), the reading worklist and the report editor beside the viewer
(doctor), critical-result acknowledgement (clinic), printable report with QR and PDF, results in My health."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response as BaseResponse

from app import db
from app.auth.decorators import roles_required
from app.auth.models import Role, User
from app.consults import service as consults
from app.errors import AppError, NotFound
from app.imaging import service as imaging
from app.imaging import views as imaging_views
from app.prescriptions.views import svg_qr
from app.reading import access, outputs, service
from app.reading.models import Priority, ReadingRequest, ReadingStatus, ReleaseMode
from app.reading.presenters import age_sex, waiting
from app.transactions import error_message, flash_outcome

bp = Blueprint("reading", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/reading")



@bp.app_context_processor
def _helpers() -> dict[str, object]:
    def chart_reading_requests(patient: Any) -> list[ReadingRequest]:
        if not current_user.is_authenticated or current_user.role not in (Role.CLINIC_STAFF, Role.DOCTOR):
            return []
        return service.for_patient(patient, by=current_user)

    def my_results() -> list[Any]:
        if not current_user.is_authenticated or current_user.role is not Role.PATIENT:
            return []
        return service.my_results(by=current_user)

    return {"chart_reading_requests": chart_reading_requests, "my_reading_results": my_results}


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return -1


@bp.route("/reading/new/<study_uid>", methods=["GET", "POST"])
@roles_required(Role.CLINIC_STAFF)
def new(study_uid: str) -> BaseResponse | tuple[str, int]:
    """Send a study to a named doctor or the reading pool, with the question and the priority."""
    study = imaging.get_study(study_uid, by=current_user, action="reading.request")
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        try:
            req = service.request_reading(study, by=current_user, question=request.form.get("question", ""),
                                          priority=request.form.get("priority", ""),
                                          assigned_to_id=_int(request.form.get("assigned_to_id")))
        except AppError as exc:
            db.rollback()
            errors, status = exc.errors or {"": [exc.detail]}, exc.status
        else:
            db.session.commit()
            target = req.assigned_to.full_name if req.assigned_to else _("the reading pool")
            flash(_("Sent to %(target)s as %(priority)s.", target=target, priority=_(req.priority.label)), "success")
            return redirect(url_for("reading.detail", request_id=req.id))
    context = {"study": study, "doctors": service.readers(), "priorities": list(Priority), "errors": errors,
               "form": request.form}
    return render_template("reading/new.html", **context), status


@bp.get("/reading")
@roles_required(Role.DOCTOR)
def worklist() -> tuple[str, int]:
    """The doctor's reading worklist: most urgent first, then the longest waiting."""
    filters = service.WorklistFilters(modality=request.args.get("modality") or None,
                                      facility_id=_int(request.args.get("facility")),
                                      status=request.args.get("status") or None)
    try:
        rows = service.worklist(by=current_user, filters=filters)
    except AppError as exc:
        db.rollback()
        flash(error_message(exc), "error")
        filters, rows = service.WorklistFilters(), service.worklist(by=current_user)
    items = [{"req": r, "waiting": waiting(r), "shows_patient": access.shows_patient(current_user, r),
              "age_sex": age_sex(r.patient)} for r in rows]
    context = {"items": items, "filters": filters, "statuses": list(ReadingStatus),
               "facilities": service.requesting_facilities(), "now": db.utcnow()}
    return render_template("reading/worklist.html", **context), 200


@bp.get("/reading/requests")
@roles_required(Role.CLINIC_STAFF)
def clinic() -> str:
    """The clinic's reading requests, open critical results first."""
    rows = service.for_clinic(by=current_user)
    return render_template("reading/clinic.html", rows=rows, now=db.utcnow())


@bp.get("/reading/<int:request_id>")
@login_required
def detail(request_id: int) -> str:
    """The request and its report; for the doctor who has it, the report editor beside the viewer."""
    req = service.get_request(request_id, by=current_user)
    user: User = current_user
    editing = access.can_write_report(user, req) and not (req.report and req.report.is_signed) and req.is_open
    context: dict[str, Any] = {
        "req": req, "report": req.report, "editing": editing, "waiting": waiting(req),
        "can_claim": access.can_claim(user, req), "can_addend": access.can_addend(user, req),
        "can_ack": access.can_acknowledge(user, req), "can_cancel": access.can_cancel(user, req) and req.status in (
            ReadingStatus.REQUESTED, ReadingStatus.IN_PROGRESS),
        "shows_patient": access.shows_patient(user, req), "age_sex": age_sex(req.patient),
    }
    if editing:
        study = imaging.get_study(req.study.study_instance_uid, by=user, action="imaging.study.view")
        context.update(imaging_views.viewer_context(study))
        template = req.report or service.template_for(req.modality)
        context.update(template=template, priors=service.priors(req, by=user),
                       consults=consults.open_consults_for(req.patient), release_modes=list(ReleaseMode),
                       key_images=json.dumps(req.report.key_images if req.report else []))
    return render_template("reading/editor.html" if editing else "reading/detail.html", **context)


def _after(request_id: int, exc: AppError | None, success: str) -> BaseResponse:
    if exc is not None:
        db.rollback()
        flash(error_message(exc), "error")
    else:
        flash(success, "success")
    return redirect(url_for("reading.detail", request_id=request_id))


@bp.post("/reading/<int:request_id>/claim")
@roles_required(Role.DOCTOR)
def claim(request_id: int) -> BaseResponse:
    req = service.get_for_claim(request_id, by=current_user)
    try:
        service.claim(req, by=current_user)
    except AppError as exc:  # someone was faster: back to the list, told who has it
        db.rollback()
        flash(exc.detail, "error")
        return redirect(url_for("reading.worklist"))
    return _after(request_id, None, _("You have this request. Write the report beside the images."))


def _report_input() -> service.ReportInput:
    raw = request.form.get("key_images")
    try:
        key_images = json.loads(raw) if raw else []
    except ValueError:
        key_images = "bad"
    return service.ReportInput(findings=request.form.get("findings"), impression=request.form.get("impression"),
                               patient_summary=request.form.get("patient_summary"), key_images=key_images)


@bp.post("/reading/<int:request_id>/report")
@roles_required(Role.DOCTOR)
def save(request_id: int) -> BaseResponse:
    """Save as preliminary, or (``action=sign``) sign as final with the second factor."""
    req = service.get_request(request_id, by=current_user, action="reading.report.save", audit_read=False)
    try:
        service.save_preliminary(req, _report_input(), by=current_user)
    except AppError as exc:
        return _after(request_id, exc, "")
    db.session.commit()  # what the doctor typed is kept even if signing is refused below
    if request.form.get("action") != "sign":
        return _after(request_id, None, _("Saved as preliminary."))
    try:
        service.sign(req, by=current_user, code=request.form.get("code"),
                     critical=request.form.get("critical") == "on",
                     release=request.form.get("release", ReleaseMode.NOW.value),
                     release_appointment_id=_int(request.form.get("release_appointment_id")))
    except AppError as exc:
        return _after(request_id, exc, "")
    db.session.commit()
    assert req.report is not None
    written = outputs.write_back(req.report, by=current_user)
    return _after(request_id, None, _("Report signed.") + ("" if written else
                  " " + _("It could not be stored in the study yet; that is retried automatically.")))


@bp.post("/reading/<int:request_id>/addendum")
@roles_required(Role.DOCTOR)
def addendum(request_id: int) -> BaseResponse:
    req = service.get_request(request_id, by=current_user, action="reading.report.addendum", audit_read=False)
    flash_outcome(lambda: service.add_addendum(req, by=current_user, body=request.form.get("text", ""),
                                               code=request.form.get("code")),
                  _("Addendum signed."))
    return redirect(url_for("reading.detail", request_id=request_id))


@bp.post("/reading/<int:request_id>/acknowledge")
@roles_required(Role.CLINIC_STAFF)
def acknowledge(request_id: int) -> BaseResponse:
    req = service.get_request(request_id, by=current_user, action="reading.critical.ack", audit_read=False)
    flash_outcome(lambda: service.acknowledge_critical(req, by=current_user),
                  _("Critical result acknowledged; the reporting doctor is told."))
    return redirect(url_for("reading.detail", request_id=request_id))


@bp.post("/reading/<int:request_id>/cancel")
@roles_required(Role.CLINIC_STAFF)
def cancel(request_id: int) -> BaseResponse:
    req = service.get_request(request_id, by=current_user, action="reading.cancel", audit_read=False)
    flash_outcome(lambda: service.cancel(req, by=current_user, reason=request.form.get("reason")),
                  _("Request cancelled."))
    return redirect(url_for("reading.detail", request_id=request_id))


def _signed_report(request_id: int, action: str) -> ReadingRequest:
    req = service.get_request(request_id, by=current_user, action=action)
    if req.report is None or not req.report.is_signed:
        raise NotFound("This report is not signed yet.")
    return req


@bp.get("/reading/<int:request_id>/print")
@login_required
def print_view(request_id: int) -> str:
    """Printable report with its signed QR code."""
    req = _signed_report(request_id, "reading.report.print")
    return render_template("reading/print.html", req=req, report=req.report)


@bp.get("/reading/<int:request_id>/qr.svg")
@login_required
def qr(request_id: int) -> Response:
    req = _signed_report(request_id, "reading.report.qr")
    payload = service.qr_payload(req.report)  # type: ignore[arg-type]
    return svg_qr(payload or "")


@bp.get("/reading/<int:request_id>/report.pdf")
@login_required
def pdf(request_id: int) -> Response:
    req = _signed_report(request_id, "reading.report.pdf")
    data = outputs.pdf_bytes(req.report)  # type: ignore[arg-type]
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="report-{req.id}.pdf"'})
