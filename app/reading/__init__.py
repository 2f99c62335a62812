"""Findings back to the patient: reading requests, the doctor's worklist, signed reports, critical results,
release to the patient (FHIR ServiceRequest / DiagnosticReport shapes)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the reading pages and API, their navigation and panels, and the release of held reports when
    a consult ends."""
    from app import web
    from app.auth.models import Role
    from app.consults import service as consults
    from app.reading import api, service, views
    from app.transactions import commit_at_request_end

    for blueprint in (views.bp, api.blp):
        commit_at_request_end(blueprint)
    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
    web.add_nav(app, "Reading worklist", "reading.worklist", Role.DOCTOR, after="patients.search")
    web.add_nav(app, "Reading requests", "reading.clinic", Role.CLINIC_STAFF, after="imaging.unmatched")
    web.add_chart_panel(app, "reading/_chart_panel.html")
    web.add_my_health_panel(app, "reading/_my_results.html")
    consults.on_consult_ended(service.release_after_consult)
