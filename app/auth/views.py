"""Sign-in, sign-out and own-password pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from app import db
from app.auth import service
from app.auth.forms import ChangePasswordForm, SignInForm
from app.errors import AppError, Unauthorized

bp = Blueprint("auth", __name__, template_folder="templates")


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response | tuple[str, int]:
    """Password sign-in; one generic message for any wrong combination."""
    if current_user.is_authenticated:
        return redirect(url_for("web.home"))
    form = SignInForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = service.authenticate(form.email.data or "", form.password.data or "")
        except Unauthorized as exc:
            form.form_errors.append(exc.detail)
            status = 401
        except AppError as exc:
            form.form_errors.append(exc.detail)
            status = exc.status
        else:
            db.session.commit()
            session.clear()
            login_user(user)
            session["last_seen"] = db.utcnow().isoformat()
            return redirect(_safe_next(request.args.get("next")) or url_for("web.home"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/sign_in.html", form=form), status


@bp.post("/sign-out")
@login_required
def sign_out() -> Response:
    """End the session."""
    service.record_sign_out(current_user)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.sign_in"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> Response | tuple[str, int]:
    """Change one's own password (forced after an admin reset)."""
    form = ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = service.change_own_password(current_user._get_current_object(), form.current_password.data or "",
                                               form.new_password.data or "")
        except AppError as exc:
            db.session.commit()  # keep the audit of a failed attempt
            form.apply_error(exc)
            status = exc.status
        else:
            db.session.commit()
            login_user(user)  # the session epoch moved: re-issue this browser's session
            flash("Your password was changed.", "success")
            return redirect(url_for("web.home"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/change_password.html", form=form), status
