"""Caregivers: a family member's account linked as the patient's proxy, with the rights the patient chose.

The patient links and revokes from their own account; clinic staff do it at the desk only with the patient's
recorded consent (how it was given, by whom, when). The rules of what a link allows live in
:mod:`app.patients.access` (:func:`~app.patients.access.may_act_for`); this module keeps the links themselves.
Every change is audited on the patient's record, and the caregiver is told.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

import sqlalchemy as sa
from flask_babel import force_locale
from flask_babel import gettext as _

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.errors import Conflict, Forbidden, ValidationFailed
from app.notify import service as notify
from app.patients import access
from app.patients.models import CaregiverLink, CaregiverRelationship, CaregiverRight, ConsentMethod, Patient

RT = "RelatedPerson"
STAFF_CONSENT = (ConsentMethod.SIGNED_FORM, ConsentMethod.SPOKEN_WITNESSED)


@dataclass
class LinkInput:
    caregiver_email: str
    relationship: str
    rights: Iterable[str] = field(default_factory=list)
    valid_until: datetime | None = None
    consent_method: str | None = None
    """Required from clinic staff: how the patient agreed (signed form, or said so at the desk)."""
    consent_reference: str | None = None
    """The signed form's reference (required with a signed form)."""


def _is_own(patient: Patient, by: User) -> bool:
    return by.role is Role.PATIENT and patient.user_id == by.id


def _deny(action: str, by: User, patient: Patient, resource_id: object = None) -> NoReturn:
    audit.forbid(action, by=by, patient_id=patient.id, resource_type=RT, resource_id=resource_id)


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(_("Some fields need attention."), errors={name: [message]})


def _clean_rights(values: Iterable[str]) -> set[CaregiverRight]:
    try:
        rights = {CaregiverRight(v) for v in values}
    except ValueError:
        raise _invalid("rights", _("Choose from the rights listed.")) from None
    if not rights:
        raise _invalid("rights", _("Choose at least one thing the caregiver may do."))
    return rights


def _consent(patient: Patient, data: LinkInput, by: User) -> tuple[ConsentMethod, str | None]:
    """How the patient's agreement is recorded: in their own account, or by their clinic's staff at the desk.

    :raises Forbidden: clinic staff without a recorded consent (audited).
    """
    if _is_own(patient, by):
        return ConsentMethod.IN_APP, None
    method = ConsentMethod(data.consent_method) if data.consent_method in set(STAFF_CONSENT) else None
    reference = (data.consent_reference or "").strip()[:120] or None
    if method is None or (method is ConsentMethod.SIGNED_FORM and reference is None):
        audit.record("caregiver.link", by=by, outcome=Outcome.DENIED, patient_id=patient.id, resource_type=RT,
                     detail={"why": "no recorded consent"})
        raise Forbidden(_("A caregiver can be linked only with the patient's consent: record how they gave it "
                          "(their signed form and its reference, or their spoken agreement in front of you)."))
    return method, reference


def link(patient: Patient, data: LinkInput, *, by: User) -> CaregiverLink:
    """Link an existing patient-role account (found by its email) as the patient's caregiver.

    :raises NotFound: ``by`` is neither the patient nor staff of their clinic (audited).
    :raises Forbidden: staff without the patient's recorded consent (audited).
    :raises ValidationFailed: unknown email, the patient's own account, no right chosen, a past end date.
    :raises Conflict: this person is already the patient's caregiver.
    """
    if not (_is_own(patient, by) or access.can_edit_demographics(by, patient)):
        _deny("caregiver.link", by, patient)
    method, reference = _consent(patient, data, by)
    from app.auth.service import normalise_email

    caregiver = db.session.scalar(sa.select(User).where(User.email == normalise_email(data.caregiver_email or "")))
    if caregiver is None or caregiver.role is not Role.PATIENT or not caregiver.active:
        raise _invalid("caregiver_email", _("No patient account uses this email. The caregiver needs their own "
                                            "Town Health account first (the clinic can create one)."))
    return _create(patient, caregiver, data, by=by, method=method, reference=reference)


def link_new_account(patient: Patient, data: LinkInput, *, full_name: str, password: str, by: User) -> CaregiverLink:
    """Clinic staff create the caregiver's own account at the desk and link it (with the patient's consent).

    The account must change its temporary password at first sign-in. :raises: as :func:`link`, and
    ``ValidationFailed``/``Conflict`` for the new account's email, name or password.
    """
    from app.auth import service as auth

    if not access.can_edit_demographics(by, patient):
        _deny("caregiver.link", by, patient)
    method, reference = _consent(patient, data, by)
    rights = _clean_rights(data.rights)  # before the account exists, so a wrong form leaves nothing behind
    caregiver = auth.create_user(email=data.caregiver_email, full_name=full_name, password=password,
                                 role=Role.PATIENT, facility_id=None, by=None, must_change_password=True)
    audit.record("caregiver.account", by=by, patient_id=patient.id, resource_type="User", resource_id=caregiver.id)
    data.rights = [r.value for r in rights]
    return _create(patient, caregiver, data, by=by, method=method, reference=reference)


def _create(patient: Patient, caregiver: User, data: LinkInput, *, by: User, method: ConsentMethod,
            reference: str | None) -> CaregiverLink:
    if caregiver.id == patient.user_id:
        raise _invalid("caregiver_email", _("This is the patient's own account."))
    try:
        relationship = CaregiverRelationship(data.relationship)
    except ValueError:
        raise _invalid("relationship", _("Choose the caregiver's relationship to the patient.")) from None
    rights = _clean_rights(data.rights)
    now = db.utcnow()
    if data.valid_until is not None and data.valid_until <= now:
        raise _invalid("valid_until", _("The end date must be in the future."))
    if access.active_link(caregiver, patient.id) is not None:
        raise Conflict(_("This person is already a caregiver; revoke the link first to change what they may do."))
    row = CaregiverLink(patient_id=patient.id, caregiver_id=caregiver.id, relationship=relationship,
                        granted_by_id=by.id, consent_method=method, consent_recorded_by_id=by.id,
                        consent_recorded_at=now, consent_reference=reference, valid_from=now,
                        valid_until=data.valid_until, **{r.column: r in rights for r in CaregiverRight})
    db.session.add(row)
    db.session.flush()
    audit.record("caregiver.link", by=by, patient_id=patient.id, resource_type=RT, resource_id=row.id,
                 detail={"caregiver_id": caregiver.id, "rights": sorted(r.value for r in rights),
                         "consent": method.value})
    with force_locale(caregiver.locale or "en"):  # the recipient's language, also outside a request
        notify.enqueue(recipient=caregiver, subject=_("You can now help %(name)s", name=patient.given_name),
                       body=_("%(name)s made you their caregiver in Town Health. Choose them under \"Acting for\" "
                              "at the top of the page.", name=f"{patient.given_name} {patient.family_name}"))
    return row


def get_link(link_id: int, *, by: User, action: str = "caregiver.read") -> CaregiverLink:
    """A link, for the patient, their clinic's staff, or the caregiver. :raises NotFound: otherwise (audited)."""
    row = db.session.get(CaregiverLink, link_id)
    if row is None:
        audit.forbid(action, by=by, resource_type=RT, resource_id=link_id)
    if not (_is_own(row.patient, by) or row.caregiver_id == by.id or access.can_edit_demographics(by, row.patient)):
        _deny(action, by, row.patient, link_id)
    return row


def revoke(row: CaregiverLink, *, by: User) -> CaregiverLink:
    """End a link at once: by the patient, their clinic's staff, or the caregiver stepping down.

    Takes effect on the caregiver's very next request (the link is re-checked on each one).
    """
    if not (_is_own(row.patient, by) or row.caregiver_id == by.id or access.can_edit_demographics(by, row.patient)):
        _deny("caregiver.revoke", by, row.patient, row.id)
    if row.revoked_at is None:
        row.revoked_at = db.utcnow()
        row.revoked_by_id = by.id
        db.session.flush()
        audit.record("caregiver.revoke", by=by, patient_id=row.patient_id, resource_type=RT, resource_id=row.id,
                     detail={"caregiver_id": row.caregiver_id})
    return row


def links_of(patient: Patient, *, by: User) -> Sequence[CaregiverLink]:
    """The patient's caregivers, current first, then ended ones (for the patient and their clinic)."""
    if not (_is_own(patient, by) or access.can_edit_demographics(by, patient)):
        _deny("caregiver.list", by, patient)
    rows = db.session.scalars(sa.select(CaregiverLink).where(CaregiverLink.patient_id == patient.id)
                              .order_by(CaregiverLink.revoked_at.is_not(None), CaregiverLink.id.desc())).all()
    audit.record("caregiver.list", by=by, patient_id=patient.id, resource_type=RT)
    return rows


def cared_for(user: User) -> Sequence[CaregiverLink]:
    """The active links of the people ``user`` cares for (the "Acting for" choices), by name."""
    if user.role is not Role.PATIENT:
        return []
    return db.session.scalars(sa.select(CaregiverLink).join(Patient, Patient.id == CaregiverLink.patient_id)
                              .where(CaregiverLink.caregiver_id == user.id,
                                     CaregiverLink.active_clause(db.utcnow()))
                              .order_by(Patient.family_name_search, Patient.given_name_search)).all()


def start_acting_for(patient_id: int, *, by: User) -> CaregiverLink:
    """Check that ``by`` may switch to acting for the patient, and record the switch.

    :raises NotFound: no active link (audited; the same answer as an unknown patient).
    """
    row = access.active_link(by, patient_id)
    if row is None:
        audit.forbid("caregiver.act_for", by=by, patient_id=patient_id, resource_type=RT)
    with access.acting_for(patient_id):
        audit.record("caregiver.act_for", by=by, patient_id=patient_id, resource_type=RT, resource_id=row.id)
    return row


def refuse(right: CaregiverRight, patient: Patient, *, by: User, action: str) -> NoReturn:
    """Audit a caregiver's attempt beyond their rights and refuse it with a friendly explanation."""
    what = {CaregiverRight.RECORD: _("see their health record"), CaregiverRight.BOOK: _("book consults for them"),
            CaregiverRight.JOIN: _("join their video consults"),
            CaregiverRight.MEDICINE: _("collect their medicine")}[right]
    audit.forbid(action, by=by, patient_id=patient.id, resource_type="Patient", resource_id=patient.id,
                 detail={"caregiver_right": right.value},
                 error=Forbidden(_("%(name)s has not given you the right to %(what)s. They (or their clinic) can "
                                   "change this; until then, switch \"Acting for\" back to yourself.",
                                   name=patient.given_name, what=what)))


def for_pickup(patient: Patient, link_id: int) -> CaregiverLink | None:
    """The patient's active caregiver link ``link_id`` if it grants collecting medicine (for the pharmacy)."""
    row = db.session.get(CaregiverLink, link_id)
    if row is None or row.patient_id != patient.id or not row.is_active(db.utcnow()):
        return None
    return row if row.grants(CaregiverRight.MEDICINE) else None


def pickup_choices(patient: Patient) -> Sequence[CaregiverLink]:
    """The patient's caregivers allowed to collect medicine, for the pharmacist's handover form."""
    return db.session.scalars(sa.select(CaregiverLink).where(
        CaregiverLink.patient_id == patient.id, CaregiverLink.can_medicine.is_(True),
        CaregiverLink.active_clause(db.utcnow())).order_by(CaregiverLink.id)).all()
