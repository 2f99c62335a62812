"""Patient records: registration, search, chart, and who may see them."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the patient pages and API, and the caregivers' pages with the "Acting for" switch."""
    from app import web
    from app.auth.models import Role
    from app.patients import api, caregiver_views, views
    from app.transactions import commit_at_request_end

    commit_at_request_end(api.blp)  # the pages still commit before rendering: panels read more while rendering
    app.register_blueprint(views.bp)
    app.register_blueprint(caregiver_views.bp)
    web.add_nav(app, "Caregivers", "caregivers.mine", Role.PATIENT, account=True)
    web.add_chart_links(app, caregiver_views.chart_links)
    app.extensions["hospital_api"].register_blueprint(api.blp)
