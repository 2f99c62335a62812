"""JSON API for prescribing under ``/api/v1`` (FHIR-shaped MedicationRequest)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from flask.views import MethodView
from flask_login import current_user, login_required
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import bearer
from app.patients import service as patients
from app.pharmacy import service as pharmacy
from app.prescriptions import fhir, service, signing
from app.prescriptions.service import PrescriptionInput

blp = Blueprint("prescriptions_api", __name__, url_prefix="/api/v1", description="Prescriptions")
bearer.declare(blp, "MedicationRequest")


class RxDraftSchema(Schema):
    """Numbers are checked by the service (not here), so every refused draft is audited with its field names."""

    drug_id = fields.Raw(required=True, metadata={"type": "integer"})
    dose_units = fields.Raw(required=True, metadata={"type": "number", "description": "units per intake"})
    frequency_per_day = fields.Raw(required=True, metadata={"type": "integer"})
    duration_days = fields.Raw(required=True, metadata={"type": "integer"})
    quantity = fields.Raw(required=True, metadata={"type": "integer", "description": "units per supply"})
    refills = fields.Raw(load_default=0, metadata={"type": "integer"})
    instructions = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=500))
    dispensing_facility_id = fields.Raw(load_default=None, allow_none=True, metadata={"type": "integer"})


class RxSignSchema(Schema):
    overrides = fields.Dict(keys=fields.Str(validate=validate.Length(max=200)),
                            values=fields.Str(validate=validate.Length(max=300)), load_default=dict,
                            metadata={"description": "Finding code → reason, for each warning overridden"})


class RxStatusSchema(Schema):
    status = fields.Str(required=True, validate=validate.Length(max=20))
    reason = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=300))


class RxPayloadSchema(Schema):
    payload = fields.Str(required=True, validate=validate.Length(min=1, max=8000))


def _rx_json(rx: Any, *, with_findings: bool = False) -> dict[str, Any]:
    findings = [f.as_dict() for f in service.findings(rx)] if with_findings else None
    progress = pharmacy.progress(rx) if rx.is_signed else None
    return fhir.medication_request(rx, progress=progress, findings=findings, qr_payload=service.qr_payload(rx))


@blp.route("/formulary")
@bearer.scope("Medication", collection=True)
class Formulary(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self) -> list[dict[str, Any]]:
        """The drugs that can be prescribed (strength, form, route, class, maximum daily dose)."""
        return [{"id": d.id, "code": d.code, "name": d.name, "strength": d.strength, "form": d.form,
                 "route": d.route, "drug_class": d.drug_class, "max_daily_mg": d.max_daily_mg,
                 "sold_in_town": d.sold_in_town} for d in service.formulary()]


@blp.route("/prescriptions/signing-key")
class SigningKey(MethodView):
    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """The public key that verifies prescription QR codes offline (PEM and JWK)."""
        public = signing.app_private_key().public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kid": signing.key_id(public), "alg": "EdDSA", "pem": signing.public_pem(public),
                "jwk": {"kty": "OKP", "crv": "Ed25519", "x": signing._b64(raw), "kid": signing.key_id(public)}}


@blp.route("/prescriptions/verify")
class Verify(MethodView):
    decorators = [login_required]

    @blp.arguments(RxPayloadSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Verify a scanned prescription QR payload (pharmacists): signature, unaltered, not yet dispensed."""
        result = service.verify(data["payload"], by=current_user)
        return {"valid": result.valid, "checks": result.checks, "document": result.document,
                "medicationRequest": fhir.medication_request(result.prescription) if result.prescription else None}


@blp.route("/patients/<int:patient_id>/medication-requests")
@bearer.scope("Patient")
class PatientRequests(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self, patient_id: int) -> list[dict[str, Any]]:
        """A patient's prescriptions (with what was dispensed)."""
        patient = patients.get_patient(patient_id, by=current_user)
        rows = [_rx_json(rx) for rx in service.for_patient(patient, by=current_user)]
        return rows

    @blp.arguments(RxDraftSchema)
    @blp.response(201)
    def post(self, data: dict[str, Any], patient_id: int) -> dict[str, Any]:
        """Write a draft (doctor with a care relationship); the answer lists the safety findings."""
        patient = patients.get_patient(patient_id, by=current_user, audit_read=False)
        rx = service.create_draft(patient, PrescriptionInput(**data), by=current_user)
        body = _rx_json(rx, with_findings=True)
        return body


@blp.route("/medication-requests/<int:rx_id>")
class RequestItem(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self, rx_id: int) -> dict[str, Any]:
        """One prescription."""
        rx = service.get(rx_id, by=current_user)
        body = _rx_json(rx, with_findings=not rx.is_signed)
        return body

    @blp.arguments(RxDraftSchema)
    @blp.response(200)
    def put(self, data: dict[str, Any], rx_id: int) -> dict[str, Any]:
        """Change a draft; a signed prescription answers 409."""
        rx = service.get(rx_id, by=current_user, action="prescription.update", audit_read=False)
        service.update_draft(rx, PrescriptionInput(**data), by=current_user)
        body = _rx_json(rx, with_findings=True)
        return body


@blp.route("/medication-requests/<int:rx_id>/sign")
class Sign(MethodView):
    decorators = [login_required]

    @blp.arguments(RxSignSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any], rx_id: int) -> dict[str, Any]:
        """Sign: 409 with ``findings`` while a contraindication or an unexplained warning remains."""
        rx = service.get(rx_id, by=current_user, action="prescription.sign", audit_read=False)
        service.sign(rx, by=current_user, overrides=data["overrides"])
        body = _rx_json(rx)
        return body


@blp.route("/medication-requests/<int:rx_id>/status")
class Status(MethodView):
    decorators = [login_required]

    @blp.arguments(RxStatusSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any], rx_id: int) -> dict[str, Any]:
        """Hold, resume (active), stop or cancel."""
        rx = service.get(rx_id, by=current_user, action="prescription.status", audit_read=False)
        service.set_status(rx, data["status"], by=current_user, reason=data["reason"])
        body = _rx_json(rx)
        return body


@blp.route("/me/medication-requests")
@bearer.scope("MedicationRequest", collection=True)
class MyRequests(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self) -> list[dict[str, Any]]:
        """My prescriptions, each with its dispenses and, when medicine waits for me, the pickup code."""
        _patient, rows = service.mine(by=current_user)
        through_app = bearer.current_token() is not None
        out = []
        for rx in rows:
            body = _rx_json(rx)
            body["dispenses"] = [fhir.medication_dispense(d, pickup_code=pharmacy.pickup_code(
                d, by=current_user, through_app=through_app)) for d in pharmacy.dispenses_for(rx)]
            out.append(body)
        return out
