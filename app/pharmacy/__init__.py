"""The clinic pharmacy: the dispensing queue, stock, pickup codes and handover."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the pharmacy pages and API; a pharmacist's work starts at the queue."""
    from app import web
    from app.auth.models import Role
    from app.pharmacy import api, views
    from app.transactions import commit_at_request_end

    for blueprint in (views.bp, api.blp):
        commit_at_request_end(blueprint)
    app.register_blueprint(views.bp)
    app.extensions["hospital_api"].register_blueprint(api.blp)
    web.add_nav(app, "Pharmacy", "pharmacy.queue", Role.PHARMACIST, position=0)
    web.add_nav(app, "Pickup", "pharmacy.pickup", Role.PHARMACIST, position=1)
    web.add_nav(app, "Stock", "pharmacy.stock", Role.PHARMACIST, position=2)
    web.set_home(app, Role.PHARMACIST, "pharmacy.queue")
