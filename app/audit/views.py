"""Admin page for browsing the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, render_template, request
from flask_login import current_user

from app import db
from app.audit import service
from app.audit.models import Outcome
from app.auth.decorators import roles_required
from app.auth.models import Role

bp = Blueprint("audit", __name__, url_prefix="/admin", template_folder="templates")


def _date_arg(name: str) -> datetime | None:
    value = request.args.get(name)
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


@bp.get("/audit")
@roles_required(Role.ADMIN)
def events() -> str:
    """Filter the audit trail by actor, patient, action prefix, outcome and date."""
    outcome = request.args.get("outcome")
    until = _date_arg("until")
    filters = {
        "actor_id": request.args.get("actor_id", type=int),
        "patient_id": request.args.get("patient_id", type=int),
        "action": (request.args.get("action") or "").strip()[:64] or None,
        "outcome": Outcome(outcome) if outcome in Outcome._value2member_map_ else None,
        "since": _date_arg("since"),
        "until": until + timedelta(days=1) if until else None,
    }
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    rows, total = service.search(by=current_user, page=page, **filters)
    db.session.commit()
    return render_template("audit/events.html", rows=rows, total=total, page=page, per_page=50,
                           args=request.args, outcomes=list(Outcome))


@bp.get("/audit/integrity")
@roles_required(Role.ADMIN)
def integrity() -> str:
    """Recompute the trail's hash chain and show the first broken link, if any."""
    result = service.verify_trail(by=current_user)
    db.session.commit()
    return render_template("audit/integrity.html", result=result)
