"""Caregiver pages: a patient's own list of caregivers, the clinic desk's linking form, and the "Acting for"
switch held in the browser session (re-checked against the link on every request)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app import db
from app.audit.context import on_behalf_of
from app.auth.decorators import roles_required
from app.auth.models import Role, User
from app.errors import AppError
from app.i18n import format_when
from app.patients import access, caregivers, service
from app.patients.forms import RELATIONSHIP_LABELS, CaregiverForm, NewCaregiverForm
from app.patients.models import CaregiverLink, CaregiverRight, ConsentMethod, Patient
from app.transactions import commit_at_request_end, flash_outcome, submit

bp = commit_at_request_end(Blueprint("caregivers", __name__, template_folder="templates"))
SESSION_KEY = "acting_for"

def chart_links(patient: Any, user: User) -> list[dict[str, str]]:
    if user.role is Role.CLINIC_STAFF:
        return [{"label": _("Caregivers"), "url": url_for("caregivers.desk", patient_id=patient.id)}]
    return []


@bp.before_app_request
def _act_for_chosen_person() -> None:
    """Set whom this request acts for: the session's choice, if the link still stands (a revocation takes
    effect on the caregiver's next request, whichever page it is)."""
    on_behalf_of.set(None)
    chosen = session.get(SESSION_KEY)
    if chosen is None or (request.endpoint or "").endswith("static"):
        return
    if not current_user.is_authenticated or access.active_link(current_user, int(chosen)) is None:
        session.pop(SESSION_KEY, None)
        if current_user.is_authenticated:
            flash(_("You are no longer a caregiver for that person; you are acting for yourself."), "info")
        return
    on_behalf_of.set(int(chosen))


@bp.teardown_app_request
def _forget_choice(_exc: BaseException | None) -> None:
    on_behalf_of.set(None)


@bp.app_template_global()
def acting_for_choices() -> dict[str, Any]:
    """The header's "Acting for" switch: the people the signed-in user cares for, and the current choice."""
    if not current_user.is_authenticated or current_user.role is not Role.PATIENT:
        return {"links": [], "current": None}
    links = caregivers.cared_for(current_user)
    current = access.acting_for_id()
    return {"links": links, "current": next((link for link in links if link.patient_id == current), None)}


@bp.app_template_global()
def relationship_label(link: CaregiverLink) -> str:
    return str(RELATIONSHIP_LABELS[link.relationship])


@bp.app_template_global()
def caregiver_rights_text(link: CaregiverLink) -> str:
    labels = {CaregiverRight.RECORD: _("see the record"), CaregiverRight.BOOK: _("book consults"),
              CaregiverRight.JOIN: _("join consults"), CaregiverRight.MEDICINE: _("collect medicine")}
    return ", ".join(labels[r] for r in link.rights)


@bp.app_template_global()
def consent_text(link: CaregiverLink) -> str:
    how = {ConsentMethod.IN_APP: _("given by the patient in their account"),
           ConsentMethod.SIGNED_FORM: _("signed form %(ref)s", ref=link.consent_reference or ""),
           ConsentMethod.SPOKEN_WITNESSED: _("spoken at the desk")}[link.consent_method]
    return _("%(how)s, recorded %(when)s", how=how, when=format_when(link.consent_recorded_at))


@bp.post("/acting-for")
@roles_required(Role.PATIENT)
def switch() -> Response:
    """Act for one of the people the user cares for, or for themself again."""
    chosen = request.form.get("patient_id", type=int)
    if chosen is None:
        session.pop(SESSION_KEY, None)
        on_behalf_of.set(None)
        flash(_("You are acting for yourself."), "success")
        return redirect(url_for("patients.my_health"))
    try:
        link = caregivers.start_acting_for(chosen, by=current_user)
    except AppError as exc:
        db.rollback()
        flash(exc.detail, "error")
        return redirect(url_for("patients.my_health"))
    session[SESSION_KEY] = link.patient_id
    flash(_("You are acting for %(name)s. Everything you do is recorded as done for them.",
            name=f"{link.patient.given_name} {link.patient.family_name}"), "success")
    return redirect(url_for("patients.my_health"))


def _own_record() -> Patient | None:
    """The signed-in patient's own record, whoever they act for: only the patient manages their caregivers."""
    with access.acting_for(None):
        return service.get_own_record(by=current_user)


@bp.route("/me/caregivers", methods=["GET", "POST"])
@roles_required(Role.PATIENT)
def mine() -> Response | tuple[str, int]:
    """My caregivers (add, revoke) and the people I care for."""
    patient = _own_record()
    form = CaregiverForm(prefix="cg")
    status = 200
    if patient is not None and form.validate_on_submit():
        status = submit(form, lambda: caregivers.link(patient, form.to_input(), by=current_user)) or 200
        if status == 200:
            flash(_("Caregiver added. They can now choose you under \"Acting for\"."), "success")
            return redirect(url_for("caregivers.mine"))
    elif request.method == "POST":
        status = 422
    links = caregivers.links_of(patient, by=current_user) if patient is not None else []
    cared_for = caregivers.cared_for(current_user)
    return render_template("patients/caregivers.html", patient=patient, links=links, form=form,
                           cared_for=cared_for, own=True), status


@bp.route("/patients/<int:patient_id>/caregivers", methods=["GET", "POST"])
@roles_required(Role.CLINIC_STAFF)
def desk(patient_id: int) -> Response | tuple[str, int]:
    """The clinic links a caregiver at the desk (an existing account, or one created now), with the patient's
    recorded consent."""
    patient = service.get_patient(patient_id, by=current_user, audit_read=False)
    form, new_form = CaregiverForm(prefix="cg"), NewCaregiverForm(prefix="new")
    status = 200
    posted = new_form if request.form.get("mode") == "new" else form
    if request.method == "POST":
        def link() -> object:
            if posted is new_form:
                return caregivers.link_new_account(
                    patient, new_form.to_input(), full_name=new_form.full_name.data or "",
                    password=new_form.password.data or "", by=current_user)
            return caregivers.link(patient, form.to_input(), by=current_user)

        if not posted.validate_on_submit():
            status = 422
        elif (refused := submit(posted, link)) is not None:
            status = refused
        else:
            flash(_("Caregiver linked."), "success")
            return redirect(url_for("caregivers.desk", patient_id=patient_id))
    links = caregivers.links_of(patient, by=current_user)
    return render_template("patients/caregivers.html", patient=patient, links=links, form=form, new_form=new_form,
                           own=False), status


@bp.post("/caregivers/<int:link_id>/revoke")
@login_required
def revoke(link_id: int) -> Response:
    """End a caregiver link now (the patient, their clinic, or the caregiver stepping down)."""
    link = caregivers.get_link(link_id, by=current_user, action="caregiver.revoke")
    flash_outcome(lambda: caregivers.revoke(link, by=current_user), _("The caregiver link has ended."))
    if current_user.role is Role.CLINIC_STAFF:
        return redirect(url_for("caregivers.desk", patient_id=link.patient_id))
    return redirect(url_for("caregivers.mine"))
