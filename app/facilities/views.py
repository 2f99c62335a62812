"""Administrator's facility settings: the time zone each facility reads times in."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from app import i18n
from app.auth.decorators import roles_required
from app.auth.models import Role
from app.facilities import service
from app.transactions import Refusal, commit_at_request_end, submit

bp = commit_at_request_end(Blueprint("facilities", __name__, url_prefix="/admin", template_folder="templates"))


@bp.route("/facilities", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def index() -> Response | tuple[str, int]:
    """Every facility with its time zone; set one."""
    status, error, failed_id = 200, None, None
    if request.method == "POST":
        facility = service.get(request.form.get("facility_id", 0, type=int))
        if facility is None:
            abort(404)
        refusal = Refusal()
        refused = submit(refusal, lambda: service.set_timezone(facility, request.form.get("timezone", ""),
                                                               by=current_user))
        if refused is None:
            flash(_("%(facility)s now shows times in %(zone)s.", facility=facility.name, zone=facility.timezone),
                  "success")
            return redirect(url_for("facilities.index"))
        status, error, failed_id = refused, refusal.message, facility.id
    return render_template("facilities/index.html", facilities=service.list_facilities(),
                           groups=i18n.zone_groups(), error=error, failed_id=failed_id), status
