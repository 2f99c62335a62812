"""Notifications: an outbox table that in-app pages read and a real SMS/email sender can consume."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the inbox and its navigation entry."""
    from app import web
    from app.auth.models import Role
    from app.notify import views

    app.register_blueprint(views.bp)
    web.add_nav(app, "Notifications", "notify.inbox", Role.PATIENT, Role.DOCTOR, Role.CLINIC_STAFF, Role.PHARMACIST)
