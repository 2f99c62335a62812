from __future__ import annotations

from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from app.auth.models import Role
from app.forms import AppForm


class SignInForm(AppForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class MfaCodeForm(AppForm):
    code = StringField("Code", validators=[DataRequired(), Length(max=40)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "text"})


class ChangePasswordForm(AppForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=256)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=256)])


class UserForm(AppForm):
    full_name = StringField("Full name", validators=[DataRequired(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    role = SelectField("Role", choices=[(r.value, r.label) for r in Role if r is not Role.GUEST],
                       validators=[DataRequired()])
    facility_id = SelectField("Facility", coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    password = PasswordField("Temporary password", validators=[DataRequired(), Length(max=256)])
    must_change_password = BooleanField("Must change at first sign-in", default=True)


class ResetPasswordForm(AppForm):
    password = PasswordField("New temporary password", validators=[DataRequired(), Length(max=256)])


class ConfirmForm(AppForm):
    """An empty form: a POST button protected by CSRF."""
