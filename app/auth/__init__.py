"""Accounts and sign-in: passwords, lockout, sessions, roles, admin user management."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register sign-in, account administration, OAuth and peer-credential pages and the accounts API."""
    from app import web
    from app.auth import admin, api, oauth_views, preferences_views, service_credential_views, views
    from app.auth.models import Role

    for blueprint in (views.bp, admin.bp, oauth_views.bp, oauth_views.endpoints, service_credential_views.bp,
                      preferences_views.bp):
        app.register_blueprint(blueprint)
    app.extensions["hospital_api"].register_blueprint(api.blp)
    web.add_nav(app, "Connected apps", "oauth.connected_apps", *Role, account=True)
    web.add_nav(app, "Time zone", "account.time_zone", *(r for r in Role if r is not Role.GUEST), account=True)
    web.add_nav(app, "OAuth apps", "oauth.clients", Role.ADMIN)
    web.add_nav(app, "DICOMweb peers", "service_credentials.peers", Role.ADMIN)
