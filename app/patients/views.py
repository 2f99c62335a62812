"""Patient pages: search, register, chart, clinical lists, care team, "My health"."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app import db
from app.audit import views as audit_views
from app.auth.decorators import roles_required
from app.auth.models import Role
from app.errors import AppError, Conflict
from app.patients import access, service
from app.patients.forms import (
    AllergyForm,
    AssignDoctorForm,
    ConditionForm,
    DemographicsForm,
    MedicationForm,
    PatientForm,
    PortalAccountForm,
    SearchForm,
)
from app.patients.models import Allergy, Condition, MedicationStatement
from app.transactions import commit_at_request_end, flash_outcome, submit

bp = commit_at_request_end(Blueprint("patients", __name__, template_folder="templates"))
audit_views.set_patient_lookup(service.ids_for_audit)

STAFF = (Role.CLINIC_STAFF, Role.DOCTOR, Role.PHARMACIST)


@bp.get("/patients")
@roles_required(*STAFF)
def search() -> str:
    """Search the patients the user may see."""
    form = SearchForm(request.args)
    form.validate()
    page_no = request.args.get("page", 1, type=int) or 1
    page = service.search(by=current_user, q=form.q.data, birth_date=form.birth_date.data, page=page_no)
    return render_template("patients/search.html", form=form, page=page)


@bp.route("/patients/new", methods=["GET", "POST"])
@roles_required(Role.CLINIC_STAFF)
def register() -> Response | tuple[str, int]:
    """Register a new patient at the user's clinic."""
    form = PatientForm()
    status = 200
    duplicate_id = None
    if form.validate_on_submit():
        try:
            patient = service.register(form.to_input(), by=current_user,
                                       allow_possible_duplicate=bool(form.confirm_not_duplicate.data))
        except Conflict as exc:
            db.rollback()
            duplicate_id = exc.extra.get("possible_duplicate_id")
            form.apply_error(exc)
            status = 409
        except AppError as exc:
            db.rollback()
            form.apply_error(exc)
            status = exc.status
        else:
            flash(_("Registered %(name)s, MRN %(mrn)s.", name=patient.display_name, mrn=patient.mrn), "success")
            return redirect(url_for("patients.chart", patient_id=patient.id))
    elif request.method == "POST":
        status = 422
    return render_template("patients/register.html", form=form, duplicate_id=duplicate_id), status


def _chart_context(patient_id: int) -> dict[str, object]:
    patient = service.get_patient(patient_id, by=current_user)
    assign = AssignDoctorForm()
    assign.doctor_id.choices = [(d.id, d.full_name) for d in service.doctors_for_assignment()]
    return {
        "patient": patient,
        "care_team": service.care_team(patient),
        "can_edit": access.can_edit_demographics(current_user, patient),
        "can_edit_clinical": access.can_edit_clinical(current_user, patient),
        "allergy_form": AllergyForm(prefix="allergy"),
        "condition_form": ConditionForm(prefix="condition"),
        "medication_form": MedicationForm(prefix="medication"),
        "assign_form": assign,
        "portal_form": PortalAccountForm(prefix="portal"),
    }


@bp.get("/patients/<int:patient_id>")
@login_required
def chart(patient_id: int) -> str:
    """The patient chart: demographics, allergies, conditions, medications, care team."""
    return render_template("patients/chart.html", **_chart_context(patient_id))


@bp.route("/patients/<int:patient_id>/edit", methods=["GET", "POST"])
@roles_required(Role.CLINIC_STAFF)
def edit(patient_id: int) -> Response | tuple[str, int]:
    """Edit demographics and contact details."""
    patient = service.get_patient(patient_id, by=current_user, action="patient.read")
    form = DemographicsForm(obj=patient)
    status = 200
    if form.validate_on_submit():
        status = submit(form, lambda: service.update_demographics(patient, form.to_input(), by=current_user)) or 200
        if status == 200:
            flash(_("Details saved."), "success")
            return redirect(url_for("patients.chart", patient_id=patient.id))
    elif request.method == "POST":
        status = 422
    return render_template("patients/edit.html", form=form, patient=patient), status


def _add_to_list(patient_id: int, kind: str) -> Response | tuple[str, int]:
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    forms = {"allergy": AllergyForm, "condition": ConditionForm, "medication": MedicationForm}
    form = forms[kind](prefix=kind)
    if form.validate_on_submit():
        data = {k: v for k, v in form.data.items() if k != "csrf_token"}
        if submit(form, lambda: getattr(service, f"add_{kind}")(patient, by=current_user, **data)) is None:
            flash(_("%(kind)s added.", kind=_(kind.capitalize())), "success")
            return redirect(url_for("patients.chart", patient_id=patient.id) + f"#{kind}")
    context = _chart_context(patient_id)
    context[f"{kind}_form"] = form
    return render_template("patients/chart.html", **context), 422


@bp.post("/patients/<int:patient_id>/allergies")
@login_required
def add_allergy(patient_id: int) -> Response | tuple[str, int]:
    """Record an allergy."""
    return _add_to_list(patient_id, "allergy")


@bp.post("/patients/<int:patient_id>/conditions")
@login_required
def add_condition(patient_id: int) -> Response | tuple[str, int]:
    """Record a condition."""
    return _add_to_list(patient_id, "condition")


@bp.post("/patients/<int:patient_id>/medications")
@login_required
def add_medication(patient_id: int) -> Response | tuple[str, int]:
    """Record a current medication."""
    return _add_to_list(patient_id, "medication")


@bp.post("/patients/<int:patient_id>/no-known-allergies")
@login_required
def no_known_allergies(patient_id: int) -> Response:
    """Record that the patient was asked and has no known allergies."""
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    flash_outcome(lambda: service.record_no_known_allergies(patient, by=current_user),
                  _("Recorded: no known allergies."))
    return redirect(url_for("patients.chart", patient_id=patient_id) + "#allergy")


@bp.post("/patients/<int:patient_id>/<kind>/<int:item_id>/status")
@login_required
def set_status(patient_id: int, kind: str, item_id: int) -> Response:
    """Resolve or deactivate an allergy, condition or medication."""
    model = {"allergies": Allergy, "conditions": Condition, "medications": MedicationStatement}.get(kind)
    if model is None:
        abort(404)
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    item = db.session.get(model, item_id)
    if item is None or item.patient_id != patient.id:
        abort(404)
    service.set_clinical_status(item, request.form.get("status", ""), by=current_user)
    flash(_("Updated."), "success")
    return redirect(url_for("patients.chart", patient_id=patient.id))


@bp.post("/patients/<int:patient_id>/care-team")
@roles_required(Role.CLINIC_STAFF)
def assign_doctor(patient_id: int) -> Response:
    """Give a doctor access to this patient."""
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    form = AssignDoctorForm()
    form.doctor_id.choices = [(d.id, d.full_name) for d in service.doctors_for_assignment()]
    if form.validate_on_submit():
        flash_outcome(lambda: service.assign_doctor(patient, form.doctor_id.data, by=current_user,
                                                    reason=form.reason.data),
                      _("Doctor added to the care team."))
    else:
        flash(_("Choose a doctor."), "error")
    return redirect(url_for("patients.chart", patient_id=patient_id))


@bp.post("/patients/<int:patient_id>/care-team/<int:assignment_id>/end")
@roles_required(Role.CLINIC_STAFF)
def end_care(patient_id: int, assignment_id: int) -> Response:
    """End a doctor's care relationship (the chart's button asks to confirm first)."""
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    flash_outcome(lambda: service.end_care_relationship(patient, assignment_id, by=current_user),
                  _("Care relationship ended; that doctor no longer has this patient in their care."))
    return redirect(url_for("patients.chart", patient_id=patient_id) + "#care-team")


@bp.post("/patients/<int:patient_id>/portal-account")
@roles_required(Role.CLINIC_STAFF)
def portal_account(patient_id: int) -> Response | tuple[str, int]:
    """Create the patient's sign-in for "My health"; a wrong field is marked on the chart's form."""
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    form = PortalAccountForm(prefix="portal")
    if form.validate_on_submit():
        try:
            service.create_portal_account(patient, email=form.email.data or "", password=form.password.data or "",
                                          by=current_user)
        except AppError as exc:
            db.rollback()
            if not exc.errors:  # nothing to correct in the form (e.g. the patient has an account already)
                flash(_("Portal account not created: %(reason)s", reason=exc.detail), "error")
                return redirect(url_for("patients.chart", patient_id=patient_id))
            form.apply_error(exc)
        else:
            flash(_("Portal account created. Give the patient the temporary password in person."), "success")
            return redirect(url_for("patients.chart", patient_id=patient_id))
    context = _chart_context(patient_id)
    context["portal_form"] = form
    return render_template("patients/chart.html", **context), 422


@bp.get("/patients/<int:patient_id>/access-log")
@roles_required(Role.CLINIC_STAFF)
def access_log(patient_id: int) -> str:
    """Who viewed this record."""
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    visits = service.access_visits(patient, by=current_user)
    return render_template("patients/access_log.html", patient=patient, visits=visits)


@bp.get("/me")
@roles_required(Role.PATIENT)
def my_health() -> str:
    """The patient's own record."""
    patient = service.get_own_record(by=current_user)
    return render_template("patients/my_health.html", patient=patient)


@bp.get("/me/access-log")
@roles_required(Role.PATIENT)
def my_access_log() -> str:
    """Who viewed my record."""
    patient = service.get_own_record(by=current_user)
    visits = service.access_visits(patient, by=current_user) if patient else []
    return render_template("patients/access_log.html", patient=patient, visits=visits, own=True)
