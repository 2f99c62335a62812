"""JSON API for patient records under ``/api/v1/patients``."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_babel import gettext
from flask_login import current_user, login_required
from flask_smorest import Blueprint

from app import db
from app.auth import bearer
from app.errors import NotFound
from app.patients import service
from app.patients.models import Allergy, CareAssignment, Condition, MedicationStatement, Patient
from app.patients.schemas import (
    AccessEventSchema,
    AllergySchema,
    CareAssignmentSchema,
    ChartSchema,
    ConditionSchema,
    MedicationSchema,
    NewPatientSchema,
    PatientPageSchema,
    PatientUpdateSchema,
    SearchArgsSchema,
    StatusSchema,
)
from app.patients.service import Page, PatientInput

blp = Blueprint("patients_api", __name__, url_prefix="/api/v1", description="Patient records")
bearer.declare(blp, "Patient")


@blp.route("/patients")
@bearer.scope("Patient", collection=True)
class Patients(MethodView):
    decorators = [login_required]

    @blp.arguments(SearchArgsSchema, location="query")
    @blp.response(200, PatientPageSchema)
    def get(self, args: dict[str, Any]) -> Page:
        """Search patients you may see (name prefix, MRN, birth date), paginated."""
        page = service.search(by=current_user, **args)
        return page

    @blp.arguments(NewPatientSchema)
    @blp.response(201, ChartSchema)
    def post(self, data: dict[str, Any]) -> Patient:
        """Register a patient at your clinic (clinic staff)."""
        allow = data.pop("allow_possible_duplicate")
        patient = service.register(PatientInput(**data), by=current_user, allow_possible_duplicate=allow)
        return patient


@blp.route("/patients/<int:patient_id>")
class PatientItem(MethodView):
    decorators = [login_required]

    @blp.response(200, ChartSchema)
    def get(self, patient_id: int) -> Patient:
        """A patient's chart."""
        patient = service.get_patient(patient_id, by=current_user)
        return patient

    @blp.arguments(PatientUpdateSchema)
    @blp.response(200, ChartSchema)
    def put(self, data: dict[str, Any], patient_id: int) -> Patient:
        """Replace demographics and contact details (clinic staff of the patient's clinic)."""
        patient = service.get_patient(patient_id, by=current_user, audit_read=False)
        data.pop("mrn", None)
        service.update_demographics(patient, PatientInput(**data), by=current_user)
        return patient


def _list_endpoint(kind: str, schema: type, model: type) -> None:
    plural = {"allergy": "allergies", "condition": "conditions", "medication": "medications"}[kind]

    class ListResource(MethodView):
        decorators = [login_required]

        @blp.response(200, schema(many=True))
        def get(self, patient_id: int) -> list[Any]:
            patient = service.get_patient(patient_id, by=current_user)
            return list(getattr(patient, plural))

        @blp.arguments(schema)
        @blp.response(201, schema)
        def post(self, data: dict[str, Any], patient_id: int) -> Any:
            patient = service.get_patient(patient_id, by=current_user, audit_read=False)
            item = getattr(service, f"add_{kind}")(patient, by=current_user, **data)
            return item

    ListResource.get.__doc__ = f"List the patient's {plural}."
    ListResource.post.__doc__ = f"Record a {kind}."
    ListResource.__name__ = f"{kind.capitalize()}List"
    blp.route(f"/patients/<int:patient_id>/{plural}", endpoint=f"{kind}_list")(ListResource)

    class StatusResource(MethodView):
        decorators = [login_required]

        @blp.arguments(StatusSchema)
        @blp.response(200, schema)
        def put(self, data: dict[str, Any], patient_id: int, item_id: int) -> Any:
            patient = service.get_patient(patient_id, by=current_user, audit_read=False)
            item = db.session.get(model, item_id)
            if item is None or item.patient_id != patient.id:
                raise NotFound(gettext("No %(kind)s with that id on this record.", kind=gettext(kind)))
            service.set_clinical_status(item, data["status"], by=current_user)
            return item

    StatusResource.put.__doc__ = f"Change a {kind}'s clinical status (active, resolved, inactive)."
    StatusResource.__name__ = f"{kind.capitalize()}Status"
    blp.route(f"/patients/<int:patient_id>/{plural}/<int:item_id>/status", endpoint=f"{kind}_status")(StatusResource)


_list_endpoint("allergy", AllergySchema, Allergy)
_list_endpoint("condition", ConditionSchema, Condition)
_list_endpoint("medication", MedicationSchema, MedicationStatement)


@blp.route("/patients/<int:patient_id>/care-team")
class CareTeam(MethodView):
    decorators = [login_required]

    @blp.response(200, CareAssignmentSchema(many=True))
    def get(self, patient_id: int) -> list[CareAssignment]:
        """Doctors with a care relationship to the patient."""
        patient = service.get_patient(patient_id, by=current_user)
        return list(service.care_team(patient))

    @blp.arguments(CareAssignmentSchema)
    @blp.response(201, CareAssignmentSchema)
    def post(self, data: dict[str, Any], patient_id: int) -> CareAssignment:
        """Assign a doctor (clinic staff of the patient's clinic)."""
        patient = service.get_patient(patient_id, by=current_user, audit_read=False)
        assignment = service.assign_doctor(patient, data["practitioner_id"], by=current_user, reason=data["reason"])
        return assignment


@blp.route("/me/record")
@bearer.scope("Patient", collection=True)
class MyRecord(MethodView):
    decorators = [login_required]

    @blp.response(200, ChartSchema)
    def get(self) -> Patient:
        """The signed-in patient's own record."""
        patient = service.get_own_record(by=current_user)
        db.session.commit()
        if patient is None:
            raise NotFound("No patient record is linked to this account.")
        return patient


@blp.route("/me/access-log")
@bearer.scope("AuditEvent", collection=True)
class MyAccessLog(MethodView):
    decorators = [login_required]

    @blp.response(200, AccessEventSchema(many=True))
    def get(self) -> list[Any]:
        """Who viewed or changed my record."""
        patient = service.get_own_record(by=current_user)
        if patient is None:
            raise NotFound("No patient record is linked to this account.")
        events = service.access_log(patient, by=current_user)
        return list(events)
