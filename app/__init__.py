"""The Internet hospital web application: ``create_app`` builds it from a :class:`~app.config.Config`."""

from __future__ import annotations

from flask import Flask, Response, request

from app import db
from app.api import make_api
from app.config import Config
from app.extensions import csrf, limiter, login_manager


def create_app(config: Config | None = None) -> Flask:
    """Build the app: settings, database, extensions, blueprints, error pages, security headers."""
    config = config or Config.from_env()
    config.validate()
    app = Flask(__name__, instance_path=str(config.INSTANCE_PATH), instance_relative_config=False)
    app.config.from_object(config)
    app.config["MAX_FORM_MEMORY_SIZE"] = 500_000
    if config.TRUSTED_PROXIES:
        # Behind nginx every request comes from the proxy: take the client's address (sign-in lockout, the audit
        # trail), scheme and host (links in answers) from the headers the proxies set, and from no further back.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = config.TRUSTED_PROXIES
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops,  # type: ignore[method-assign]
                                x_prefix=hops)

    engine = db.make_engine(config.DATABASE_URL, echo=config.SQL_ECHO)
    app.extensions["db_engine"] = engine
    db.session.configure(bind=engine)
    db.import_models()

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        db.discard_session()

    @app.before_request
    def _autocommit_reads() -> None:
        """Before anything touches the database (the user load included); see :func:`app.db.begin_autocommit`."""
        view = app.view_functions.get(request.endpoint or "")
        if request.method in ("GET", "HEAD") and getattr(view, "autocommit_reads", False):
            db.begin_autocommit()

    @app.after_request
    def _commit_late_audit_events(resp: Response) -> Response:
        """A page's panels read and audit while its template renders, after the view's commit: their events are
        committed here, before the response leaves; if that fails the request fails (a 500, no data)."""
        from app.audit import service as audit

        if resp.status_code < 400 and audit.uncommitted():
            db.session.commit()
        return resp

    csrf.init_app(app)
    login_manager.init_app(app)
    app.config["RATELIMIT_STORAGE_URI"] = (app.config.get("RATELIMIT_STORAGE_URI") or app.config.get("REDIS_URL")
                                           or "memory://")
    limiter.init_app(app)
    from app import i18n

    i18n.init_app(app)
    from app.auth import bearer, cors, oauth2

    oauth2.init_app(app)
    bearer.init_app(app)
    cors.init_app(app)
    api = make_api(app)
    app.extensions["hospital_api"] = api

    from app import (
        audit,
        auth,
        consults,
        facilities,
        imaging,
        notify,
        objects,
        patients,
        pharmacy,
        prescriptions,
        reading,
        web,
    )

    app.register_blueprint(web.bp)
    app.register_blueprint(objects.bp)
    # Each domain registers its blueprints, navigation, chart panels and home page; the order places the
    # navigation entries (a domain may put its entry after another's).
    for domain in (auth, facilities, patients, audit, consults, imaging, notify, prescriptions, pharmacy, reading):
        domain.init_app(app)

    from app.errors import register_error_handlers
    from app.fhir import routes as fhir_routes

    fhir_routes.init_app(app)
    register_error_handlers(app)
    web.init_request_hooks(app)
    from app import cli

    cli.register(app)
    return app
