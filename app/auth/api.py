"""JSON API for accounts: the current user, and admin user management."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_login import current_user, login_required
from flask_smorest import Blueprint
from flask_wtf.csrf import generate_csrf
from marshmallow import Schema, fields, validate

from app.auth import bearer, service
from app.auth.models import Role, User
from app.transactions import commit_at_request_end

blp = commit_at_request_end(Blueprint("auth_api", __name__, url_prefix="/api/v1", description="Accounts"))
bearer.declare(blp, bearer.WILDCARD)  # managing accounts is no FHIR resource: only a wildcard scope


class UserSchema(Schema):
    id = fields.Int(dump_only=True)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    full_name = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    role = fields.Enum(Role, by_value=True, required=True)
    facility_id = fields.Int(allow_none=True, load_default=None)
    active = fields.Bool(dump_only=True)
    must_change_password = fields.Bool(load_default=True)
    last_sign_in_at = fields.DateTime(dump_only=True, allow_none=True)


class NewUserSchema(UserSchema):
    password = fields.Str(required=True, load_only=True, validate=validate.Length(max=256))


class PasswordSchema(Schema):
    password = fields.Str(required=True, load_only=True, validate=validate.Length(max=256))


class ActiveSchema(Schema):
    active = fields.Bool(required=True)


class UserQuerySchema(Schema):
    role = fields.Enum(Role, by_value=True, load_default=None)
    q = fields.Str(load_default=None, validate=validate.Length(max=100))


class CsrfSchema(Schema):
    csrf_token = fields.Str()


@blp.route("/auth/csrf")
@bearer.any_scope
class CsrfToken(MethodView):
    @blp.response(200, CsrfSchema)
    def get(self) -> dict[str, str]:
        """A CSRF token for session-authenticated writes: send it as the ``X-CSRFToken`` header."""
        return {"csrf_token": generate_csrf()}


@blp.route("/me")
@bearer.any_scope
class Me(MethodView):
    decorators = [login_required]

    @blp.response(200, UserSchema)
    def get(self) -> User:
        """The signed-in account."""
        return current_user._get_current_object()


@blp.route("/users")
class Users(MethodView):
    decorators = [login_required]

    @blp.arguments(UserQuerySchema, location="query")
    @blp.response(200, UserSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[User]:
        """List accounts (admin)."""
        users = service.list_users(by=current_user, role=args["role"], q=args["q"])
        return list(users)

    @blp.arguments(NewUserSchema)
    @blp.response(201, UserSchema)
    def post(self, data: dict[str, Any]) -> User:
        """Create an account (admin)."""
        user = service.create_user(by=current_user, **data)
        return user


@blp.route("/users/<int:user_id>/active")
class UserActive(MethodView):
    decorators = [login_required]

    @blp.arguments(ActiveSchema)
    @blp.response(200, UserSchema)
    def put(self, data: dict[str, Any], user_id: int) -> User:
        """Deactivate or reactivate an account (admin); deactivation ends its sessions."""
        user = service.set_active(service.get_user(user_id, by=current_user), data["active"], by=current_user)
        return user


@blp.route("/users/<int:user_id>/password")
class UserPassword(MethodView):
    decorators = [login_required]

    @blp.arguments(PasswordSchema)
    @blp.response(204)
    def put(self, data: dict[str, Any], user_id: int) -> None:
        """Reset an account's password to a temporary one (admin)."""
        service.reset_password(service.get_user(user_id, by=current_user), data["password"], by=current_user)
