"""Pharmacy pages: the dispensing queue, a dispense (prepare, ready, hold, decline, hand over), pickup by code,
QR verification, drug labels and stock."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from app import db
from app.auth.decorators import roles_required
from app.auth.models import Role
from app.errors import AppError
from app.patients import caregivers
from app.pharmacy import service
from app.pharmacy.models import Dispense, DispenseStatus
from app.prescriptions import service as prescriptions
from app.transactions import error_message, flash_outcome

bp = Blueprint("pharmacy", __name__, template_folder="templates", url_prefix="/pharmacy")



@bp.get("")
@roles_required(Role.PHARMACIST)
def queue() -> str:
    """Prescriptions to prepare and dispenses by status."""
    q = service.queue(by=current_user)
    return render_template("pharmacy/queue.html", q=q, progress=q.progress, Status=DispenseStatus)


@bp.post("/prescriptions/<int:rx_id>/dispenses")
@roles_required(Role.PHARMACIST)
def start(rx_id: int) -> Response:
    """Pick stock (first expiring first) and start preparing."""
    rx = prescriptions.get(rx_id, by=current_user, action="dispense.create", audit_read=False)
    raw = (request.form.get("quantity") or "").strip()
    try:
        quantity = int(raw) if raw else None
    except ValueError:
        quantity = -1
    try:
        dispense = service.start_dispense(rx, by=current_user, quantity=quantity)
    except AppError as exc:
        db.rollback()
        flash(error_message(exc), "error")
        return redirect(url_for("pharmacy.queue"))
    db.session.commit()
    if dispense.quantity < dispense.quantity_requested:
        flash(_("Partial dispense: %(quantity)s of %(requested)s in stock.", quantity=dispense.quantity,
                requested=dispense.quantity_requested), "warn")
    return redirect(url_for("pharmacy.dispense", dispense_id=dispense.id))


def _render_dispense(d: Dispense, *, code: str = "", errors: dict[str, list[str]] | None = None,
                     status: int = 200) -> tuple[str, int]:
    return render_template("pharmacy/dispense.html", d=d, rx=d.prescription, progress=service.progress(d.prescription),
                           code=code, errors=errors or {}, form=request.form,
                           caregivers=caregivers.pickup_choices(d.prescription.patient),
                           transitions=sorted(t.value for t in service.TRANSITIONS.get(d.status, set())
                                              if t is not DispenseStatus.COMPLETED)), status


@bp.get("/dispenses/<int:dispense_id>")
@roles_required(Role.PHARMACIST)
def dispense(dispense_id: int) -> tuple[str, int]:
    """One dispense: batches picked, actions, handover form."""
    d = service.get_dispense(dispense_id, by=current_user)
    return _render_dispense(d)


@bp.post("/dispenses/<int:dispense_id>/status")
@roles_required(Role.PHARMACIST)
def set_status(dispense_id: int) -> Response:
    """Mark ready, hold, resume, decline or cancel."""
    d = service.get_dispense(dispense_id, by=current_user, action="dispense.status", audit_read=False)
    flash_outcome(lambda: service.transition(d, request.form.get("status", ""), by=current_user,
                                             reason=request.form.get("reason")),
                  lambda: _("Dispense is now: %(status)s.", status=_(d.status.label)))
    return redirect(url_for("pharmacy.dispense", dispense_id=dispense_id))


@bp.post("/dispenses/<int:dispense_id>/handover")
@roles_required(Role.PHARMACIST)
def handover(dispense_id: int) -> Response | tuple[str, int]:
    """Hand over after the code and ID check."""
    f = request.form
    # "caregiver:<link id>": a registered caregiver of the patient, named by the link rather than typed in
    receiver, _sep, link_id = f.get("receiver", "patient").partition(":")
    link = int(link_id) if receiver == "caregiver" and link_id.isdigit() else None
    data = service.Handover(code=f.get("code", ""), id_document=f.get("id_document", ""),
                            receiver="proxy" if receiver == "caregiver" else receiver, proxy_name=f.get("proxy_name"),
                            proxy_relation=f.get("proxy_relation"), caregiver_link_id=link)
    try:
        d = service.hand_over(dispense_id, data, by=current_user)
    except AppError as exc:
        db.rollback()
        d = service.get_dispense(dispense_id, by=current_user, audit_read=False)
        db.session.commit()
        if exc.errors:
            return _render_dispense(d, code=data.code, errors=exc.errors, status=exc.status)
        flash(exc.detail, "error")
        return redirect(url_for("pharmacy.dispense", dispense_id=dispense_id))
    flash(_("Handed over %(quantity)s units.", quantity=d.quantity), "success")
    return redirect(url_for("pharmacy.dispense", dispense_id=dispense_id))


@bp.route("/pickup", methods=["GET", "POST"])
@roles_required(Role.PHARMACIST)
def pickup() -> tuple[str, int] | Response:
    """Enter or scan a patient's pickup code."""
    error = None
    if request.method == "POST":
        code = request.form.get("code", "")
        try:
            d = service.find_by_code(code, by=current_user)
        except AppError as exc:
            db.rollback()
            error = error_message(exc)
        else:
            return _render_dispense(d, code=code)
    return render_template("pharmacy/pickup.html", error=error), 422 if error else 200


@bp.route("/verify", methods=["GET", "POST"])
@roles_required(Role.PHARMACIST)
def verify() -> tuple[str, int]:
    """Check a prescription's signed QR code."""
    result, error = None, None
    if request.method == "POST":
        try:
            result = prescriptions.verify(request.form.get("payload", ""), by=current_user)
        except AppError as exc:
            db.rollback()
            error = error_message(exc)
    return render_template("pharmacy/verify.html", result=result, error=error), 422 if error else 200


@bp.get("/dispenses/<int:dispense_id>/label")
@roles_required(Role.PHARMACIST)
def label(dispense_id: int) -> str:
    """Printable drug label."""
    d = service.get_dispense(dispense_id, by=current_user, action="dispense.label")
    return render_template("pharmacy/label.html", d=d, rx=d.prescription)


@bp.route("/stock", methods=["GET", "POST"])
@roles_required(Role.PHARMACIST)
def stock() -> tuple[str, int] | Response:
    """Batches on the shelf; book in a delivery."""
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        f = request.form
        try:
            expires = date.fromisoformat(f.get("expires_on", ""))
        except ValueError:
            expires = date.min
        try:
            drug_id, quantity = int(f.get("drug_id", "")), int(f.get("quantity", ""))
        except ValueError:
            drug_id, quantity = -1, -1
        try:
            service.receive_stock(by=current_user, drug_id=drug_id, lot=f.get("lot", ""), expires_on=expires,
                                  quantity=quantity)
        except AppError as exc:
            db.rollback()
            errors = exc.errors or {"": [exc.detail]}
        else:
            flash(_("Batch booked in."), "success")
            return redirect(url_for("pharmacy.stock"))
    batches = service.stock(by=current_user)
    today = date.today()
    flags = {b.id: "expired" if b.expires_on <= today else "soon" if (b.expires_on - today).days <= 60 else ""
             for b in batches}
    return render_template("pharmacy/stock.html", batches=batches, flags=flags, drugs=prescriptions.formulary(),
                           errors=errors, form=request.form), 422 if errors else 200
