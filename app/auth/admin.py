"""Admin pages: accounts (create, deactivate, reset password)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from app.auth import mfa, service
from app.auth.decorators import roles_required
from app.auth.forms import ConfirmForm, ResetPasswordForm, UserForm
from app.auth.models import Role, User
from app.facilities import service as facilities
from app.transactions import commit_at_request_end, submit

bp = commit_at_request_end(Blueprint("auth_admin", __name__, url_prefix="/admin", template_folder="templates"))


def _user_form() -> UserForm:
    form = UserForm()
    form.facility_id.choices = [("", "— none (patients, admins) —")] + [
        (str(f.id), f"{f.name} ({f.kind.value})") for f in facilities.list_facilities()]
    return form


@bp.get("/users")
@roles_required(Role.ADMIN)
def users() -> str:
    """List accounts, filterable by role and name."""
    role = request.args.get("role") or None
    q = request.args.get("q") or None
    items = service.list_users(by=current_user, role=Role(role) if role in Role._value2member_map_ else None, q=q)
    return render_template("auth/admin_users.html", users=items, role=role, q=q or "", confirm=ConfirmForm())


@bp.route("/users/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def new_user() -> Response | tuple[str, int]:
    """Create a staff or patient account."""
    form = _user_form()
    status = 200
    if form.validate_on_submit():
        created: list[User] = []
        status = submit(form, lambda: created.append(service.create_user(
            email=form.email.data or "", full_name=form.full_name.data or "", password=form.password.data or "",
            role=Role(form.role.data), facility_id=form.facility_id.data, by=current_user,
            must_change_password=bool(form.must_change_password.data)))) or 200
        if created:
            flash(_("Account created for %(name)s.", name=created[0].full_name), "success")
            return redirect(url_for("auth_admin.users"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/admin_user_new.html", form=form), status


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def user_detail(user_id: int) -> Response | tuple[str, int]:
    """One account: reset its password."""
    user = service.get_user(user_id, by=current_user)
    form = ResetPasswordForm()
    status = 200
    if form.validate_on_submit():
        status = submit(form, lambda: service.reset_password(user, form.password.data or "", by=current_user)) or 200
        if status == 200:
            flash(_("Password reset. The user must choose a new one at next sign-in."), "success")
            return redirect(url_for("auth_admin.user_detail", user_id=user.id))
    elif request.method == "POST":
        status = 422
    return render_template("auth/admin_user.html", user=user, form=form, confirm=ConfirmForm(),
                           mfa_enrolled=mfa.is_enrolled(user)), status


@bp.post("/users/<int:user_id>/two-step/reset")
@roles_required(Role.ADMIN)
def reset_two_step(user_id: int) -> Response:
    """Remove a person's authenticator (lost phone); they set up a new one at next sign-in."""
    if ConfirmForm().validate_on_submit():
        user = service.get_user(user_id, by=current_user)
        mfa.remove(user, by=current_user)
        user.session_epoch += 1
        flash(_("Two-step sign-in reset for %(name)s.", name=user.full_name), "success")
    return redirect(url_for("auth_admin.user_detail", user_id=user_id))


@bp.post("/users/<int:user_id>/active")
@roles_required(Role.ADMIN)
def set_active(user_id: int) -> Response:
    """Deactivate or reactivate an account."""
    form = ConfirmForm()
    if not form.validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return redirect(url_for("auth_admin.user_detail", user_id=user_id))
    user = service.get_user(user_id, by=current_user)
    active = request.form.get("active") == "1"
    service.set_active(user, active, by=current_user)
    flash(_("%(name)s is now active.", name=user.full_name) if active
          else _("%(name)s is now deactivated.", name=user.full_name), "success")
    return redirect(url_for("auth_admin.user_detail", user_id=user.id))
