from __future__ import annotations

from datetime import UTC, datetime, time

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    Field,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from app.forms import AppForm
from app.patients.caregivers import LinkInput
from app.patients.models import AllergySeverity, CaregiverRelationship, CaregiverRight, ConsentMethod, Sex
from app.patients.service import PatientInput

CHOOSE = ("", _l("Choose…"))
"""First option of a clinical choice: nothing is preselected, so nobody saves a guess by not looking."""
SEVERITIES = ", ".join(s.value for s in AllergySeverity)


class PatientForm(AppForm):
    given_name = StringField(_l("Given name"), validators=[DataRequired(), Length(max=100)])
    family_name = StringField(_l("Family name"), validators=[DataRequired(), Length(max=100)])
    birth_date = DateField(_l("Birth date"), validators=[DataRequired(message=_l("Enter the birth date."))])
    sex = SelectField(_l("Sex"), choices=[CHOOSE, *[(s.value, _l(s.value.capitalize())) for s in Sex]],
                      validators=[DataRequired(message=_l("Choose the patient's sex."))])
    phone = StringField(_l("Phone"), validators=[Optional(), Length(max=32)])
    email = StringField(_l("Email"), validators=[Optional(), Length(max=254)])
    address = TextAreaField(_l("Address"), validators=[Optional(), Length(max=300)])
    allergies = TextAreaField(_l("Allergies (one per line: substance; severity; reaction)"),
                              validators=[Optional(), Length(max=2000)])
    no_known_allergies = BooleanField(_l("No known allergies (I asked the patient)"))
    conditions = TextAreaField(_l("Conditions (one per line)"), validators=[Optional(), Length(max=2000)])
    medications = TextAreaField(_l("Current medications (one per line: name; dosage)"),
                                validators=[Optional(), Length(max=2000)])
    confirm_not_duplicate = BooleanField(_l("I checked: this is a different person"))

    def validate_allergies(self, field: Field) -> None:
        """Each line needs a substance and one of the severities: a missing severity is never guessed."""
        problems = []
        for n, line in enumerate(_lines(field.data), 1):
            item = _allergy_line(line)
            if not item["substance"]:
                problems.append(_("Line %(n)s: start with the substance.", n=n))
            elif not item["severity"]:
                problems.append(_("Line %(n)s (%(substance)s): add the severity (%(severities)s).", n=n,
                                  substance=item["substance"], severities=SEVERITIES))
            elif item["severity"] not in {s.value for s in AllergySeverity}:
                problems.append(_("Line %(n)s (%(substance)s): the severity must be %(severities)s, "
                                  "not \"%(severity)s\".",
                                  n=n, substance=item["substance"], severities=SEVERITIES, severity=item["severity"]))
        if problems:
            raise ValidationError(" ".join(problems))

    def validate_no_known_allergies(self, field: Field) -> None:
        if field.data and _lines(self.allergies.data):
            raise ValidationError(_("Untick this, or remove the allergies listed above."))

    def to_input(self) -> PatientInput:
        assert self.birth_date.data is not None
        return PatientInput(
            given_name=self.given_name.data or "", family_name=self.family_name.data or "",
            birth_date=self.birth_date.data, sex=Sex(self.sex.data), phone=self.phone.data,
            email=self.email.data, address=self.address.data,
            no_known_allergies=bool(self.no_known_allergies.data),
            allergies=[_allergy_line(line) for line in _lines(self.allergies.data)],
            conditions=[{"description": line} for line in _lines(self.conditions.data)],
            medications=[_medication_line(line) for line in _lines(self.medications.data)],
        )


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _allergy_line(line: str) -> dict[str, str | None]:
    parts = [p.strip() for p in line.split(";")]
    severity = parts[1].lower() if len(parts) > 1 else ""
    return {"substance": parts[0], "severity": severity, "reaction": parts[2] if len(parts) > 2 and parts[2] else None}


def _medication_line(line: str) -> dict[str, str | None]:
    name, _, dosage = line.partition(";")
    return {"name": name.strip(), "dosage": dosage.strip() or None}


class DemographicsForm(PatientForm):
    """Editing keeps the clinical lists on the chart, so those fields are not part of this form."""

    allergies = None  # type: ignore[assignment]
    no_known_allergies = None  # type: ignore[assignment]
    conditions = None  # type: ignore[assignment]
    medications = None  # type: ignore[assignment]
    confirm_not_duplicate = None  # type: ignore[assignment]

    def to_input(self) -> PatientInput:
        assert self.birth_date.data is not None
        return PatientInput(given_name=self.given_name.data or "", family_name=self.family_name.data or "",
                            birth_date=self.birth_date.data, sex=Sex(self.sex.data), phone=self.phone.data,
                            email=self.email.data, address=self.address.data)


class AllergyForm(AppForm):
    substance = StringField(_l("Substance"), validators=[DataRequired(), Length(max=120)])
    severity = SelectField(_l("Severity"),
                           choices=[CHOOSE, *[(s.value, _l(s.value.capitalize())) for s in AllergySeverity]],
                           validators=[DataRequired(message=_l("Choose how severe the reaction is."))])
    reaction = StringField(_l("Reaction"), validators=[Optional(), Length(max=300)])


class ConditionForm(AppForm):
    description = StringField(_l("Condition"), validators=[DataRequired(), Length(max=200)])
    code = StringField(_l("Code (ICD-10, optional)"), validators=[Optional(), Length(max=32)])
    onset_date = DateField(_l("Onset"), validators=[Optional()])


class MedicationForm(AppForm):
    name = StringField(_l("Medication"), validators=[DataRequired(), Length(max=120)])
    dosage = StringField(_l("Dosage"), validators=[Optional(), Length(max=200)])


class AssignDoctorForm(AppForm):
    doctor_id = SelectField(_l("Doctor"), coerce=int)
    reason = StringField(_l("Reason"), validators=[Optional(), Length(max=200)])


class PortalAccountForm(AppForm):
    email = StringField(_l("Patient's email"), validators=[DataRequired(), Length(max=254)])
    password = StringField(_l("Temporary password"), validators=[DataRequired(), Length(max=256)])


class SearchForm(AppForm):
    class Meta:
        csrf = False

    q = StringField(_l("Name or MRN"), validators=[Optional(), Length(max=100)])
    birth_date = DateField(_l("Birth date"), validators=[Optional()])


class _Checkboxes(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _right_labels() -> list[tuple[str, str]]:
    return [(CaregiverRight.RECORD.value, _l("See the health record, prescriptions and results")),
            (CaregiverRight.BOOK.value, _l("Book, move and cancel video consults")),
            (CaregiverRight.JOIN.value, _l("Check in and join video consults")),
            (CaregiverRight.MEDICINE.value, _l("Collect medicine at the pharmacy"))]


RELATIONSHIP_LABELS = {
    CaregiverRelationship.SPOUSE: _l("Husband, wife or partner"), CaregiverRelationship.CHILD: _l("Son or daughter"),
    CaregiverRelationship.GRANDCHILD: _l("Grandchild"), CaregiverRelationship.PARENT: _l("Parent"),
    CaregiverRelationship.SIBLING: _l("Brother or sister"), CaregiverRelationship.OTHER_FAMILY: _l("Other family"),
    CaregiverRelationship.FRIEND: _l("Friend"), CaregiverRelationship.NEIGHBOUR: _l("Neighbour"),
}


class CaregiverForm(AppForm):
    """The patient (or their clinic's staff) links an existing account as caregiver."""

    caregiver_email = StringField(_l("Caregiver's email (the one they sign in with)"),
                                  validators=[DataRequired(), Length(max=254)])
    relationship = SelectField(_l("Relationship to the patient"),
                               choices=[("", _l("Choose…")), *[(r.value, label) for r, label in
                                                               RELATIONSHIP_LABELS.items()]],
                               validators=[DataRequired(message=_l("Choose the relationship."))])
    rights = _Checkboxes(_l("What they may do"), choices=_right_labels)
    valid_until = DateField(_l("Until (optional; empty: until revoked)"), validators=[Optional()])
    consent_method = SelectField(_l("How the patient gave consent"), choices=[
        ("", _l("Choose…")), (ConsentMethod.SIGNED_FORM.value, _l("Signed the clinic's proxy form")),
        (ConsentMethod.SPOKEN_WITNESSED.value, _l("Said so at the desk, in front of me"))], validators=[Optional()])
    consent_reference = StringField(_l("Form reference (for a signed form)"),
                                    validators=[Optional(), Length(max=120)])

    def to_input(self) -> LinkInput:
        until = self.valid_until.data
        return LinkInput(caregiver_email=self.caregiver_email.data or "", relationship=self.relationship.data or "",
                         rights=list(self.rights.data or []),
                         valid_until=datetime.combine(until, time(23, 59), tzinfo=UTC) if until else None,
                         consent_method=self.consent_method.data or None,
                         consent_reference=self.consent_reference.data)


class NewCaregiverForm(CaregiverForm):
    """Clinic staff create the caregiver's own account at the desk and link it."""

    caregiver_email = StringField(_l("Caregiver's email (their new sign-in)"),
                                  validators=[DataRequired(), Length(max=254)])
    full_name = StringField(_l("Caregiver's full name"), validators=[DataRequired(), Length(max=200)])
    password = PasswordField(_l("Temporary password (they change it at first sign-in)"),
                             validators=[DataRequired()])
