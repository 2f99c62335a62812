"""Read-only JSON API over the audit trail (admins)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_login import current_user, login_required
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app import db
from app.audit import service
from app.audit.models import Outcome
from app.auth import bearer

blp = Blueprint("audit_api", __name__, url_prefix="/api/v1/audit", description="Audit trail")
bearer.declare(blp, "AuditEvent")


class AuditEventSchema(Schema):
    id = fields.Int()
    occurred_at = fields.DateTime()
    actor_id = fields.Int(allow_none=True)
    actor_role = fields.Str(allow_none=True)
    actor_name = fields.Str(allow_none=True)
    action = fields.Str()
    outcome = fields.Enum(Outcome, by_value=True)
    patient_id = fields.Int(allow_none=True)
    resource_type = fields.Str(allow_none=True)
    resource_id = fields.Str(allow_none=True)
    ip = fields.Str(allow_none=True)
    detail = fields.Dict(allow_none=True)


class AuditQuerySchema(Schema):
    actor_id = fields.Int(load_default=None)
    patient_id = fields.Int(load_default=None)
    action = fields.Str(load_default=None, validate=validate.Length(max=64),
                        metadata={"description": "Action prefix, e.g. 'patient.'"})
    outcome = fields.Enum(Outcome, by_value=True, load_default=None)
    since = fields.AwareDateTime(load_default=None)
    until = fields.AwareDateTime(load_default=None)
    page = fields.Int(load_default=1, validate=validate.Range(min=1))
    per_page = fields.Int(load_default=50, validate=validate.Range(min=1, max=500))


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEventSchema))
    total = fields.Int()


@blp.route("/events")
class AuditEvents(MethodView):
    decorators = [login_required]

    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Filter the audit trail (admins), newest first."""
        rows, total = service.search(by=current_user, **args)
        db.session.commit()
        return {"items": rows, "total": total}
