from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from app.auth.models import Role
from app.forms import AppForm


class SignInForm(AppForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])


class MfaCodeForm(AppForm):
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=40)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "text"})


class ChangePasswordForm(AppForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=256)])
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=256)])


class UserForm(AppForm):
    full_name = StringField(_l("Full name"), validators=[DataRequired(), Length(max=200)])
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=254)])
    role = SelectField(_l("Role"), choices=[(r.value, r.label) for r in Role if r is not Role.GUEST],
                       validators=[DataRequired()])
    facility_id = SelectField(_l("Facility"), coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    password = PasswordField(_l("Temporary password"), validators=[DataRequired(), Length(max=256)])
    must_change_password = BooleanField(_l("Must change at first sign-in"), default=True)


class ResetPasswordForm(AppForm):
    password = PasswordField(_l("New temporary password"), validators=[DataRequired(), Length(max=256)])


class ConfirmForm(AppForm):
    """An empty form: a POST button protected by CSRF."""
