"""Sign-in, sign-out and own-password pages."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from app import db
from app.auth import mfa, service
from app.auth.forms import ChangePasswordForm, ConfirmForm, MfaCodeForm, SignInForm
from app.auth.models import User
from app.errors import AppError
from app.transactions import commit_at_request_end, submit

bp = commit_at_request_end(Blueprint("auth", __name__, template_folder="templates"))


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
        except AppError as exc:  # not rolled back: the attempt, the failure count and its audit row are kept
            form.form_errors.append(exc.detail)
            status = exc.status
        else:
            db.session.commit()  # the account row is saved before the session is signed in
            next_url = _safe_next(request.args.get("next")) or url_for("web.home")
            session.clear()
            if mfa.is_enrolled(user) or mfa.is_required(user):
                # Password accepted; the session is not signed in until the second step succeeds.
                session["mfa_pending"] = {"user": user.get_id(), "at": db.utcnow().isoformat(), "next": next_url}
                endpoint = "auth.mfa_verify" if mfa.is_enrolled(user) else "auth.mfa_enrol"
                return redirect(url_for(endpoint))
            _complete_sign_in(user)
            return redirect(next_url)
    elif request.method == "POST":
        status = 422
    return render_template("auth/sign_in.html", form=form), status


def _complete_sign_in(user: User, *, amr: tuple[str, ...] = ("pwd",)) -> None:
    session.pop("mfa_pending", None)
    login_user(user)
    session["last_seen"] = db.utcnow().isoformat()
    session["amr"] = list(amr)  # authentication methods, passed on to ID tokens (RFC 8176)


def _pending_user() -> tuple[User, str] | None:
    """The account that passed its password in this browser less than five minutes ago, if any."""
    pending = session.get("mfa_pending")
    if not pending:
        return None
    if db.utcnow() - datetime.fromisoformat(pending["at"]) > timedelta(minutes=5):
        session.pop("mfa_pending", None)
        return None
    user = service.load_session_user(pending["user"])
    return (user, pending["next"]) if user is not None else None


@bp.route("/sign-in/code", methods=["GET", "POST"])
def mfa_verify() -> Response | tuple[str, int]:
    """Second step: a TOTP or recovery code."""
    pending = _pending_user()
    if pending is None:
        flash(_("Sign in with your password first."), "info")
        return redirect(url_for("auth.sign_in"))
    user, next_url = pending
    form = MfaCodeForm()
    status = 200
    if form.validate_on_submit():
        methods: list[str] = []
        status = submit(form, lambda: methods.append(mfa.verify(user, form.code.data or ""))) or 200
        if methods:
            db.session.commit()  # the used code is saved before the session is signed in
            _complete_sign_in(user, amr=("pwd", "otp" if methods[0] == "totp" else "kba", "mfa"))
            return redirect(next_url)
    elif request.method == "POST":
        status = 422
    return render_template("auth/mfa_verify.html", form=form), status


def _enrol(user: User, *, required: bool) -> Response | tuple[str, int] | list[str]:
    form = MfaCodeForm()
    status = 200
    if form.validate_on_submit():
        codes: list[list[str]] = []
        status = submit(form, lambda: codes.append(mfa.confirm_enrolment(user, form.code.data or ""))) or 200
        if codes:
            return codes[0]
    elif request.method == "POST":
        status = 422
    seed = mfa.pending_secret(user) or mfa.start_enrolment(user)
    return render_template("auth/mfa_enrol.html", form=form, secret=seed, required=required,
                           qr=mfa.qr_data_uri(mfa.provisioning_uri(user, seed))), status


@bp.route("/sign-in/set-up-code", methods=["GET", "POST"])
def mfa_enrol() -> Response | tuple[str, int]:
    """Enrol an authenticator: during sign-in when the role requires it, or from the settings page."""
    if current_user.is_authenticated:
        user, next_url, required = current_user._get_current_object(), url_for("auth.mfa_settings"), False
        if mfa.is_enrolled(user):
            return redirect(next_url)
    else:
        pending = _pending_user()
        if pending is None:
            return redirect(url_for("auth.sign_in"))
        (user, next_url), required = pending, True
        if mfa.is_enrolled(user):
            return redirect(url_for("auth.mfa_verify"))
    result = _enrol(user, required=required)
    if isinstance(result, list):
        if not current_user.is_authenticated:
            db.session.commit()  # the authenticator is saved before the session is signed in
            _complete_sign_in(user, amr=("pwd", "otp", "mfa"))
        return render_template("auth/mfa_recovery.html", codes=result, next_url=next_url), 200
    return result


@bp.get("/account/two-step")
@login_required
def mfa_settings() -> str:
    """Two-step sign-in status and actions."""
    user = current_user._get_current_object()
    return render_template("auth/mfa_settings.html", enrolled=mfa.is_enrolled(user), required=mfa.is_required(user),
                           remaining=mfa.remaining_recovery_codes(user), form=ConfirmForm())


@bp.post("/account/two-step/recovery-codes")
@login_required
def mfa_recovery_codes() -> Response | tuple[str, int]:
    """Replace the recovery codes (the old ones stop working)."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("auth.mfa_settings"))
    codes = mfa.regenerate_recovery_codes(current_user)
    return render_template("auth/mfa_recovery.html", codes=codes, next_url=url_for("auth.mfa_settings")), 200


@bp.post("/account/two-step/remove")
@login_required
def mfa_remove() -> Response:
    """Turn two-step sign-in off (only where the role allows)."""
    if ConfirmForm().validate_on_submit():
        try:
            mfa.remove(current_user, by=current_user)
        except AppError as exc:
            db.rollback()
            flash(exc.detail, "error")
        else:
            flash(_("Two-step sign-in is off."), "info")
    return redirect(url_for("auth.mfa_settings"))


@bp.post("/sign-out")
@login_required
def sign_out() -> Response:
    """End the session."""
    service.record_sign_out(current_user)
    logout_user()
    session.clear()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.sign_in"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> Response | tuple[str, int]:
    """Change one's own password (forced after an admin reset)."""
    form = ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        user = current_user._get_current_object()
        # A refusal is rolled back; its failure audit row is kept (app.audit.service.rollback_keeping_durable).
        status = submit(form, lambda: service.change_own_password(user, form.current_password.data or "",
                                                                  form.new_password.data or "")) or 200
        if status == 200:
            db.session.commit()  # the new password is saved before this browser's session is re-issued
            login_user(user)  # the session epoch moved: re-issue this browser's session
            flash(_("Your password was changed."), "success")
            return redirect(url_for("web.home"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/change_password.html", form=form), status
