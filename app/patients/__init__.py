"""Patient records: registration, search, chart, and who may see them."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the patient pages and API."""
    from app.patients import api, views
    from app.transactions import commit_at_request_end

    commit_at_request_end(api.blp)  # the pages still commit before rendering: panels read more while rendering
    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
