"""The person's own settings page: the time zone every time is shown in."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app import i18n
from app.auth import preferences
from app.transactions import Refusal, commit_at_request_end, submit

bp = commit_at_request_end(Blueprint("account", __name__, template_folder="templates"))


@bp.route("/account/time-zone", methods=["GET", "POST"])
@login_required
def time_zone() -> Response | tuple[str, int]:
    """Choose the zone times are shown in (or follow the facility's / the clinic's)."""
    status = 200
    error = None
    if request.method == "POST":
        refusal = Refusal()
        refused = submit(refusal, lambda: preferences.set_own_timezone(current_user._get_current_object(),
                                                                      request.form.get("timezone")))
        if refused is None:
            flash(_("Times are now shown in %(zone)s.", zone=i18n.zone_of(current_user)), "success")
            return redirect(url_for("account.time_zone"))
        status, error = refused, refusal.message
    inherited = i18n.inherited_zone(current_user) or i18n.DEFAULT_TIMEZONE
    return render_template("auth/time_zone.html", own=current_user.timezone, inherited=inherited,
                           current=i18n.zone_of(current_user), groups=i18n.zone_groups(), error=error,
                           typed=request.form.get("timezone", "")), status
