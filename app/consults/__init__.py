"""Video consults: availability, booking, the virtual waiting room, signaling, and the consult record."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the consult pages and API (with the media broker's routes), their navigation, chart and My health
    panels, and what happens when a consult ends."""
    from app import web
    from app.auth.models import Role
    from app.consults import api, broker_api, broker_views, service, summaries, views
    from app.transactions import commit_at_request_end

    assert broker_api.blp is api.blp and broker_views.bp is views.bp  # their routes are on these blueprints
    for blueprint in (views.bp, api.blp):
        commit_at_request_end(blueprint)
    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
    web.add_nav(app, "Consults", "consults.index", Role.PATIENT, Role.CLINIC_STAFF)
    web.add_nav(app, "Today's consults", "consults.today", Role.DOCTOR)
    web.add_nav(app, "Availability", "consults.availability", Role.DOCTOR)
    web.add_my_health_panel(app, "consults/_my_visit_summaries.html")
    web.add_chart_links(app, views.chart_links)
    web.add_chart_panel(app, "consults/_visit_history.html")
    web.add_chart_panel(app, "consults/_chart_recordings.html")
    service.on_consult_ended(summaries.tell_patient)
