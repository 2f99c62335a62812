"""JSON API of the reading loop under ``/api/v1`` (FHIR-shaped ServiceRequest and DiagnosticReport)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_login import current_user, login_required
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app import db
from app.auth import bearer
from app.errors import NotFound
from app.imaging import service as imaging
from app.reading import fhir, outputs, service

blp = Blueprint("reading_api", __name__, url_prefix="/api/v1", description="Reading requests and reports")
bearer.declare(blp, bearer.WILDCARD)  # reading spans ServiceRequest and DiagnosticReport


class RequestSchema(Schema):
    study_instance_uid = fields.Str(required=True, validate=validate.Length(min=1, max=64))
    question = fields.Str(required=True, validate=validate.Length(max=2000))
    priority = fields.Str(required=True, validate=validate.Length(max=16))
    assigned_to_id = fields.Int(load_default=None, allow_none=True)


class WorklistArgs(Schema):
    modality = fields.Str(load_default=None, validate=validate.Length(max=16))
    facility = fields.Int(load_default=None)
    status = fields.Str(load_default=None, validate=validate.Length(max=16))
    limit = fields.Int(load_default=100, validate=validate.Range(min=1, max=500))


class ReportSchema(Schema):
    findings = fields.Str(load_default=None, allow_none=True)
    impression = fields.Str(load_default=None, allow_none=True)
    patient_summary = fields.Str(load_default=None, allow_none=True)
    key_images = fields.List(fields.Dict(), load_default=None, allow_none=True)


class SignSchema(Schema):
    code = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=32))
    critical = fields.Bool(load_default=False)
    release = fields.Str(load_default="now", validate=validate.Length(max=16))
    release_appointment_id = fields.Int(load_default=None, allow_none=True)


class AddendumSchema(Schema):
    text = fields.Str(required=True)
    code = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=32))


@blp.route("/reading-requests")
class Requests(MethodView):
    decorators = [login_required]

    @blp.arguments(WorklistArgs, location="query")
    @blp.response(200)
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The doctor's reading worklist (ServiceRequest), most urgent first, then the longest waiting."""
        filters = service.WorklistFilters(modality=args["modality"], facility_id=args["facility"],
                                          status=args["status"])
        rows = service.worklist(by=current_user, filters=filters, limit=args["limit"])
        body = [fhir.service_request(r) for r in rows]
        return body

    @blp.arguments(RequestSchema)
    @blp.response(201)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Send a study to be read (clinic staff): to a doctor (``assigned_to_id``) or the pool."""
        study = imaging.get_study(data["study_instance_uid"], by=current_user, action="reading.request")
        req = service.request_reading(study, by=current_user, question=data["question"], priority=data["priority"],
                                      assigned_to_id=data["assigned_to_id"])
        body = fhir.service_request(req)
        return body


@blp.route("/reading-requests/<int:request_id>")
class RequestItem(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self, request_id: int) -> dict[str, Any]:
        req = service.get_request(request_id, by=current_user)
        body = fhir.service_request(req)
        return body


@blp.route("/reading-requests/<int:request_id>/claim")
class Claim(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def post(self, request_id: int) -> dict[str, Any]:
        """Claim a request; 409 names who has it when another doctor was first."""
        req = service.get_for_claim(request_id, by=current_user)
        service.claim(req, by=current_user)
        body = fhir.service_request(req)
        return body


def _report_json(req: Any) -> dict[str, Any]:
    if req.report is None:
        raise NotFound("No report on this request yet.")
    return fhir.diagnostic_report(req.report, qr_payload=service.qr_payload(req.report))


@blp.route("/reading-requests/<int:request_id>/report")
class ReportItem(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self, request_id: int) -> dict[str, Any]:
        """The report as a FHIR DiagnosticReport (linked to the ImagingStudy and the ServiceRequest)."""
        req = service.get_request(request_id, by=current_user, action="reading.report.read")
        body = _report_json(req)
        return body

    @blp.arguments(ReportSchema)
    @blp.response(200)
    def put(self, data: dict[str, Any], request_id: int) -> dict[str, Any]:
        """Save the report as preliminary; a signed report answers 409."""
        req = service.get_request(request_id, by=current_user, action="reading.report.save", audit_read=False)
        service.save_preliminary(req, service.ReportInput(**data), by=current_user)
        body = _report_json(req)
        return body


@blp.route("/reading-requests/<int:request_id>/report/sign")
class Sign(MethodView):
    decorators = [login_required]

    @blp.arguments(SignSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any], request_id: int) -> dict[str, Any]:
        """Sign as final (second-factor ``code``), then store the report in the study as a DICOM object."""
        req = service.get_request(request_id, by=current_user, action="reading.report.sign", audit_read=False)
        service.sign(req, by=current_user, **data)
        db.session.commit()
        assert req.report is not None
        outputs.write_back(req.report, by=current_user)
        return _report_json(req)


@blp.route("/reading-requests/<int:request_id>/report/addenda")
class Addenda(MethodView):
    decorators = [login_required]

    @blp.arguments(AddendumSchema)
    @blp.response(201)
    def post(self, data: dict[str, Any], request_id: int) -> dict[str, Any]:
        """Add a signed addendum (a final report is never edited)."""
        req = service.get_request(request_id, by=current_user, action="reading.report.addendum", audit_read=False)
        service.add_addendum(req, by=current_user, body=data["text"], code=data["code"])
        body = _report_json(req)
        return body


@blp.route("/reading-requests/<int:request_id>/critical/acknowledge")
class Acknowledge(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def post(self, request_id: int) -> dict[str, Any]:
        """Acknowledge a critical result (clinic staff of the requesting clinic)."""
        req = service.get_request(request_id, by=current_user, action="reading.critical.ack", audit_read=False)
        report = service.acknowledge_critical(req, by=current_user)
        body = {"acknowledged_by": report.critical_acked_by_id,
                "acknowledged_at": report.critical_acked_at.isoformat() if report.critical_acked_at else None}
        return body
