"""Facilities: the remote hospital and the town clinics (each clinic with its pharmacy)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the administrator's facility settings page (time zone of each facility)."""
    from app import web
    from app.auth.models import Role
    from app.facilities import views

    app.register_blueprint(views.bp)
    web.add_nav(app, "Facilities", "facilities.index", Role.ADMIN, after="auth_admin.users")
