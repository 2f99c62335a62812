"""Prescription pages: write and sign (doctor), printable prescription with QR, "My prescriptions" (patient)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import qrcode
import qrcode.image.svg
from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response as BaseResponse

from app import db
from app.auth.decorators import roles_required
from app.auth.models import Role, User
from app.errors import AppError, NotFound
from app.notify import service as notify
from app.patients import service as patients
from app.pharmacy import service as pharmacy
from app.prescriptions import access, rules, service
from app.prescriptions.models import Prescription, RequestStatus
from app.prescriptions.service import PrescriptionInput
from app.transactions import flash_outcome

bp = Blueprint("prescriptions", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/prescriptions")



def chart_links(patient: Any, user: User) -> list[dict[str, str]]:
    if user.role is Role.PATIENT:
        return [{"label": "My prescriptions", "url": url_for("prescriptions.mine")}]
    links = [{"label": "Prescriptions", "url": url_for("patients.chart", patient_id=patient.id) + "#prescriptions"}]
    if user.role is Role.DOCTOR and access.can_prescribe(user, patient):
        new_rx = url_for("prescriptions.new", patient_id=patient.id)
        links.insert(0, {"label": "Prescribe", "url": new_rx, "primary": "1"})
    return links




@bp.app_context_processor
def _helpers() -> dict[str, object]:
    def chart_prescriptions(patient: Any) -> list[tuple[Prescription, Any]]:
        if not current_user.is_authenticated or current_user.role is Role.PATIENT:
            return []
        rows = service.for_patient(patient, by=current_user)
        books = pharmacy.ledgers([rx.id for rx in rows if rx.is_signed])
        return [(rx, pharmacy.progress(rx, books[rx.id]) if rx.is_signed else None) for rx in rows]

    return {"chart_prescriptions": chart_prescriptions}


def svg_qr(data: str) -> Response:
    img = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=2)
    buf = io.BytesIO()
    img.save(buf)
    resp = Response(buf.getvalue(), mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _int(name: str) -> int | None:
    raw = (request.form.get(name) or "").strip()
    try:
        return int(raw)
    except ValueError:
        return None if not raw else -10**9  # a clear "enter a number" from the service's range check


def _float(name: str) -> float | None:
    raw = (request.form.get(name) or "").strip()
    try:
        return float(raw)
    except ValueError:
        return None if not raw else float("nan")


def _input_from_form() -> PrescriptionInput:
    return PrescriptionInput(
        drug_id=_int("drug_id"), dose_units=_float("dose_units"), frequency_per_day=_int("frequency_per_day"),
        duration_days=_int("duration_days"), quantity=_int("quantity"), refills=_int("refills") or 0,
        instructions=request.form.get("instructions"), dispensing_facility_id=_int("dispensing_facility_id"))


DRAFT_FIELDS = ("drug_id", "dose_units", "frequency_per_day", "duration_days", "quantity", "refills",
                "dispensing_facility_id", "instructions")


def _draft_page(patient: Any, save: Callable[[PrescriptionInput], Prescription], *, rx: Prescription | None = None,
                saved: str | None = None) -> BaseResponse | tuple[str, int]:
    """The prescription form (new or draft): save and go to the checks, or show the errors on their fields."""
    errors: dict[str, list[str]] = {}
    status = 200
    form: Any = request.form
    if request.method == "POST":
        try:
            rx = save(_input_from_form())
        except AppError as exc:
            db.rollback()
            errors, status = exc.errors or {"": [exc.detail]}, exc.status
        else:
            db.session.commit()
            if saved:
                flash(saved, "success")
            return redirect(url_for("prescriptions.detail", rx_id=rx.id))
    elif rx is not None:
        values = {name: getattr(rx, name) for name in DRAFT_FIELDS}
        form = {k: "" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for k, v in values.items()}
    return render_template("prescriptions/new.html", patient=patient, drugs=service.formulary(),
                           pharmacies=service.pharmacies(), errors=errors, form=form, rx=rx), status


@bp.route("/patients/<int:patient_id>/prescriptions/new", methods=["GET", "POST"])
@roles_required(Role.DOCTOR)
def new(patient_id: int) -> BaseResponse | tuple[str, int]:
    """Write a prescription; it is saved as a draft and checked before signing."""
    patient = patients.get_patient(patient_id, by=current_user, action="prescription.create", audit_read=False)
    return _draft_page(patient, lambda data: service.create_draft(patient, data, by=current_user))


@bp.route("/prescriptions/<int:rx_id>/edit", methods=["GET", "POST"])
@roles_required(Role.DOCTOR)
def edit(rx_id: int) -> BaseResponse | tuple[str, int]:
    """Change a draft before signing (a signed prescription is stopped and written again instead)."""
    rx = service.get(rx_id, by=current_user, action="prescription.update", audit_read=False)
    return _draft_page(rx.patient, lambda data: service.update_draft(rx, data, by=current_user), rx=rx,
                       saved=_("Draft saved. Check it again before signing."))


@bp.get("/prescriptions/<int:rx_id>")
@login_required
def detail(rx_id: int) -> str:
    """A prescription: safety findings and signing (draft), QR and dispensing progress (signed)."""
    rx = service.get(rx_id, by=current_user)
    found = service.findings(rx) if rx.status is RequestStatus.DRAFT else []
    context = {
        "rx": rx,
        "findings": found,
        "blocking": [f for f in found if f.level == rules.CONTRAINDICATION],
        "progress": pharmacy.progress(rx) if rx.is_signed else None,
        "dispenses": pharmacy.dispenses_for(rx),
        "can_manage": access.can_manage(current_user, rx),
        "transitions": sorted(t.value for t in service.TRANSITIONS.get(rx.status, set()) & service.DOCTOR_TARGETS),
        "can_prepare": (current_user.role is Role.PHARMACIST and current_user.facility_id == rx.dispensing_facility_id
                        and rx.status is RequestStatus.ACTIVE and pharmacy.remaining(rx) > 0),
    }
    return render_template("prescriptions/detail.html", **context)


@bp.post("/prescriptions/<int:rx_id>/sign")
@roles_required(Role.DOCTOR)
def sign(rx_id: int) -> BaseResponse | tuple[str, int]:
    """Sign, with a reason for each overridden warning."""
    rx = service.get(rx_id, by=current_user, action="prescription.sign", audit_read=False)
    overrides = {k.removeprefix("override::"): v for k, v in request.form.items() if k.startswith("override::")}
    try:
        service.sign(rx, by=current_user, overrides=overrides)
    except AppError as exc:
        db.rollback()
        flash(exc.detail, "error")
        return redirect(url_for("prescriptions.detail", rx_id=rx_id))
    flash(_("Prescription signed. The pharmacy can now dispense it."), "success")
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.post("/prescriptions/<int:rx_id>/status")
@roles_required(Role.DOCTOR)
def set_status(rx_id: int) -> BaseResponse:
    """Hold, resume, stop or cancel."""
    rx = service.get(rx_id, by=current_user, action="prescription.status", audit_read=False)
    flash_outcome(lambda: service.set_status(rx, request.form.get("status", ""), by=current_user,
                                             reason=request.form.get("reason")),
                  lambda: _("Prescription is now %(status)s.", status=_(rx.status.value)))
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.get("/prescriptions/<int:rx_id>/print")
@login_required
def print_view(rx_id: int) -> str:
    """Printable prescription with its signed QR code."""
    rx = service.get(rx_id, by=current_user, action="prescription.print")
    if not rx.is_signed:
        raise NotFound("Only signed prescriptions can be printed.")
    return render_template("prescriptions/print.html", rx=rx)


@bp.get("/prescriptions/<int:rx_id>/qr.svg")
@login_required
def qr(rx_id: int) -> Response:
    """The signed payload as a QR code (SVG)."""
    rx = service.get(rx_id, by=current_user, action="prescription.qr")
    payload = service.qr_payload(rx)
    if payload is None:
        raise NotFound("This prescription is not signed yet.")
    return svg_qr(payload)


@bp.get("/me/prescriptions")
@roles_required(Role.PATIENT)
def mine() -> str:
    """My prescriptions: status, what was dispensed, and the pickup code when medicine is ready."""
    patient, rows = service.mine(by=current_user)
    items, deadlines = [], {}
    books = pharmacy.ledgers([rx.id for rx in rows])
    for rx in rows:
        dispenses = [(d, pharmacy.pickup_code(d, by=current_user)) for d in pharmacy.dispenses_for(rx)]
        deadlines.update({d.id: pharmacy.pickup_deadline(d) for d, _code in dispenses})
        items.append({"rx": rx, "progress": pharmacy.progress(rx, books[rx.id]), "dispenses": dispenses})
    messages = notify.for_user(current_user, limit=5)
    return render_template("prescriptions/mine.html", patient=patient, items=items, messages=messages,
                           deadlines=deadlines)


@bp.get("/me/dispenses/<int:dispense_id>/pickup-qr.svg")
@roles_required(Role.PATIENT)
def pickup_qr(dispense_id: int) -> Response:
    """The one-time pickup code as a QR code, for the counter's scanner."""
    dispense = pharmacy.get_dispense(dispense_id, by=current_user, action="dispense.pickup_code")
    code = pharmacy.pickup_code(dispense, by=current_user)
    if code is None:
        raise NotFound("No medicine is waiting for pickup under this id.")
    return svg_qr(code)
