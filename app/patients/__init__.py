"""Patient records: registration, search, chart, and who may see them."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the patient pages and API."""
    from app.patients import api, views

    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
