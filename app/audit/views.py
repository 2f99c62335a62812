"""Admin page for browsing the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, render_template, request
from flask_login import current_user

from app.audit import service, wording
from app.audit.models import Outcome
from app.auth.decorators import roles_required
from app.auth.models import Role
from app.transactions import commit_at_request_end

bp = commit_at_request_end(Blueprint("audit", __name__, url_prefix="/admin", template_folder="templates"))


def _date_arg(name: str) -> datetime | None:
    value = request.args.get(name)
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


PatientLookup = Callable[..., list[int]]
_patient_lookup: list[PatientLookup] = []


def set_patient_lookup(lookup: PatientLookup) -> None:
    """The patients domain turns a typed name or MRN into patient ids (audit imports no other domain)."""
    _patient_lookup[:] = [lookup]


@bp.get("/audit")
@roles_required(Role.ADMIN)
def events() -> str:
    """Filter the audit trail by who (name or id), patient (name, MRN or id), action, outcome and date."""
    outcome = request.args.get("outcome")
    until = _date_arg("until")
    who = (request.args.get("who") or request.args.get("actor_id") or "").strip()[:100]
    patient = (request.args.get("patient") or request.args.get("patient_id") or "").strip()[:100]
    filters: dict[str, Any] = {
        "action": (request.args.get("action") or "").strip()[:64] or None,
        "outcome": Outcome(outcome) if outcome in Outcome._value2member_map_ else None,
        "since": _date_arg("since"),
        "until": until + timedelta(days=1) if until else None,
    }
    if who.isdigit():
        filters["actor_id"] = int(who)
    elif who:
        filters["actor_name"] = who
    notes: list[str] = []
    if patient.isdigit() and len(patient) < 8:  # a record id; an MRN has 8 digits
        filters["patient_id"] = int(patient)
    elif patient and _patient_lookup:
        filters["patient_ids"] = _patient_lookup[0](patient, by=current_user)
        if not filters["patient_ids"]:
            notes.append(f"No patient matches \u201c{patient}\u201d: check the spelling, or type an MRN.")
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    rows, total = service.search(by=current_user, page=page, **filters)
    return render_template("audit/events.html", rows=rows, total=total, page=page, per_page=50,
                           args=request.args, outcomes=list(Outcome), notes=notes, describe=wording.describe,
                           who=who, patient=patient)


@bp.get("/audit/integrity")
@roles_required(Role.ADMIN)
def integrity() -> str:
    """Recompute the trail's hash chain and show the first broken link, if any."""
    result = service.verify_trail(by=current_user)
    return render_template("audit/integrity.html", result=result)
