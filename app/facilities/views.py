"""Administrator's facility settings: the time zone each facility reads times in."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from app import db, i18n
from app.auth.decorators import roles_required
from app.auth.models import Role
from app.errors import AppError
from app.facilities import service

bp = Blueprint("facilities", __name__, url_prefix="/admin", template_folder="templates")


@bp.route("/facilities", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def index() -> Response | tuple[str, int]:
    """Every facility with its time zone; set one."""
    status, error, failed_id = 200, None, None
    if request.method == "POST":
        facility = service.get(request.form.get("facility_id", 0, type=int))
        if facility is None:
            abort(404)
        try:
            service.set_timezone(facility, request.form.get("timezone", ""), by=current_user)
        except AppError as exc:
            db.rollback()
            error = " ".join(m for msgs in (exc.errors or {}).values() for m in msgs) or exc.detail
            status, failed_id = exc.status, facility.id
        else:
            db.session.commit()
            flash(_("%(facility)s now shows times in %(zone)s.", facility=facility.name, zone=facility.timezone),
                  "success")
            return redirect(url_for("facilities.index"))
    return render_template("facilities/index.html", facilities=service.list_facilities(),
                           groups=i18n.zone_groups(), error=error, failed_id=failed_id), status
