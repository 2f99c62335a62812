"""Append-only audit trail of every touch of patient data, every sign-in and every denial."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the audit trail pages and API."""
    from app.audit import api, views

    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
