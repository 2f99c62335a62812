"""Prescriptions: drafts, signing, status, and what the pharmacy dispenses against."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the prescription pages and API, the patient's entry and the chart's buttons and panel."""
    from app import web
    from app.auth.models import Role
    from app.prescriptions import api, views
    from app.transactions import commit_at_request_end

    for blueprint in (views.bp, api.blp):
        commit_at_request_end(blueprint)
    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
    web.add_nav(app, "My prescriptions", "prescriptions.mine", Role.PATIENT, after="patients.my_health")
    web.add_chart_links(app, views.chart_links)
    web.add_chart_panel(app, "prescriptions/_chart_panel.html")
