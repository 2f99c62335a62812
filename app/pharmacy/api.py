"""JSON API for the pharmacy under ``/api/v1`` (FHIR-shaped MedicationDispense)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_login import current_user, login_required
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import bearer
from app.pharmacy import service
from app.prescriptions import fhir
from app.prescriptions import service as prescriptions

blp = Blueprint("pharmacy_api", __name__, url_prefix="/api/v1", description="Pharmacy")
bearer.declare(blp, "MedicationDispense")


class DispenseStartSchema(Schema):
    quantity = fields.Raw(load_default=None, allow_none=True, metadata={"type": "integer"})


class DispenseStatusSchema(Schema):
    status = fields.Str(required=True, validate=validate.Length(max=20))
    reason = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=300))


class DispenseHandoverSchema(Schema):
    code = fields.Str(required=True, validate=validate.Length(max=40))
    id_document = fields.Str(required=True, validate=validate.Length(max=60))
    receiver = fields.Str(load_default="patient", validate=validate.OneOf(["patient", "proxy"]))
    proxy_name = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=120))
    proxy_relation = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=60))


class PickupCodeSchema(Schema):
    code = fields.Str(required=True, validate=validate.Length(max=40))


class StockBatchSchema(Schema):
    drug_id = fields.Raw(required=True, metadata={"type": "integer"})
    lot = fields.Str(required=True, validate=validate.Length(max=40))
    expires_on = fields.Date(required=True)
    quantity = fields.Raw(required=True, metadata={"type": "integer"})


def _stock_json(b: Any) -> dict[str, Any]:
    return {"id": b.id, "drug": b.drug.code, "display": b.drug.display, "lot": b.lot,
            "expires_on": b.expires_on.isoformat(), "quantity": b.quantity}


@blp.route("/pharmacy/queue")
class Queue(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """This pharmacy's work: prescriptions to prepare and dispenses by status."""
        q = service.queue(by=current_user)
        body = {"toPrepare": [fhir.medication_request(rx, progress=q.progress[rx.id]) for rx in q.to_prepare],
                "dispenses": {s.value: [fhir.medication_dispense(d) for d in rows] for s, rows in q.by_status.items()}}
        return body


@blp.route("/medication-requests/<int:rx_id>/dispenses")
@bearer.scope("MedicationRequest")
class Start(MethodView):
    decorators = [login_required]

    @blp.arguments(DispenseStartSchema)
    @blp.response(201)
    def post(self, data: dict[str, Any], rx_id: int) -> dict[str, Any]:
        """Start a dispense: picks stock first-expiring-first; partial when the shelf is short."""
        rx = prescriptions.get(rx_id, by=current_user, action="dispense.create", audit_read=False)
        d = service.start_dispense(rx, by=current_user, quantity=data["quantity"])
        body = fhir.medication_dispense(d)
        return body


@blp.route("/medication-dispenses/<int:dispense_id>")
class Item(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self, dispense_id: int) -> dict[str, Any]:
        """One dispense (the patient also gets the pickup code while it waits)."""
        d = service.get_dispense(dispense_id, by=current_user)
        body = fhir.medication_dispense(d, pickup_code=service.pickup_code(d, by=current_user))
        return body


@blp.route("/medication-dispenses/<int:dispense_id>/status")
class Status(MethodView):
    decorators = [login_required]

    @blp.arguments(DispenseStatusSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any], dispense_id: int) -> dict[str, Any]:
        """in-progress (ready for pickup), on-hold, preparation (resume), declined or cancelled (with reason)."""
        d = service.get_dispense(dispense_id, by=current_user, action="dispense.status", audit_read=False)
        service.transition(d, data["status"], by=current_user, reason=data["reason"])
        body = fhir.medication_dispense(d)
        return body


@blp.route("/medication-dispenses/<int:dispense_id>/handover")
class HandOver(MethodView):
    decorators = [login_required]

    @blp.arguments(DispenseHandoverSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any], dispense_id: int) -> dict[str, Any]:
        """Hand over after checking the pickup code and an ID document; 409 if already handed over."""
        d = service.hand_over(dispense_id, service.Handover(**data), by=current_user)
        body = fhir.medication_dispense(d)
        return body


@blp.route("/pharmacy/pickup-lookup")
class Lookup(MethodView):
    decorators = [login_required]

    @blp.arguments(PickupCodeSchema)
    @blp.response(200)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Find the medicine waiting here for a pickup code."""
        d = service.find_by_code(data["code"], by=current_user)
        body = fhir.medication_dispense(d)
        return body


@blp.route("/pharmacy/stock")
class Stock(MethodView):
    decorators = [login_required]

    @blp.response(200)
    def get(self) -> list[dict[str, Any]]:
        """Batches on this pharmacy's shelf."""
        rows = [_stock_json(b) for b in service.stock(by=current_user)]
        return rows

    @blp.arguments(StockBatchSchema)
    @blp.response(201)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Book in a delivered batch."""
        batch = service.receive_stock(by=current_user, **data)
        body = _stock_json(batch)
        return body
