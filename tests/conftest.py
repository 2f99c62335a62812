"""Test rig: a fresh PostgreSQL database per run (migrated with Alembic), each test in a rolled-back
transaction, a Flask client that sends CSRF tokens like a browser, and factories.

``TEST_DB=sqlite`` runs the same fixtures on a temporary SQLite file (the smoke suite, ``-m smoke``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app, db
from app.cli import migrate
from app.config import TestConfig

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "correct horse battery staple"  # noqa: S105


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Create, migrate, and at the end drop this run's own database."""
    if os.environ.get("TEST_DB") == "sqlite":
        path = tmp_path_factory.mktemp("db") / "test.db"
        url = f"sqlite:///{path}"
        migrate(url)
        yield url
        return
    name = f"hospital_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    try:
        migrate(url)
        yield url
    finally:
        db.session.remove()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def test_config(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> TestConfig:
    cfg = TestConfig()
    cfg.DATABASE_URL = database_url
    cfg.INSTANCE_PATH = tmp_path_factory.mktemp("instance")
    cfg.STORAGE_PATH = cfg.INSTANCE_PATH / "objects"
    return cfg


@pytest.fixture(scope="session")
def app(test_config: TestConfig) -> Flask:
    return create_app(test_config)


@pytest.fixture(scope="session")
def engine(app: Flask) -> sa.Engine:
    return app.extensions["db_engine"]


@pytest.fixture
def db_session(app: Flask, engine: sa.Engine) -> Iterator[Any]:
    """Bind the app's session to one connection inside a transaction that is rolled back afterwards.

    Commits in the code under test become savepoint releases (SQLAlchemy's "join an external transaction").
    No app context stays pushed: each request must get its own (Flask-Login and CSRF cache per context).
    Tests that call services directly use ``app_ctx``.
    """
    db.session.remove()
    connection = engine.connect()
    transaction = connection.begin()
    db.session.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield db.session
    finally:
        db.session.remove()
        if transaction.is_active:
            transaction.rollback()
        connection.close()
        db.session.configure(bind=engine, join_transaction_mode="rollback_only")


@pytest.fixture
def app_ctx(app: Flask, db_session: Any) -> Iterator[Any]:
    """An app context for tests that call services directly (not for tests that also make requests)."""
    with app.test_request_context("/"):
        yield db.session


class CsrfClient(FlaskClient):
    """A test client that behaves like our pages: unsafe requests carry the CSRF token header."""

    send_csrf = True

    def open(self, *args: Any, **kwargs: Any) -> Any:
        method = (kwargs.get("method") or "GET").upper()
        if self.send_csrf and method not in ("GET", "HEAD", "OPTIONS"):
            headers = dict(kwargs.pop("headers", None) or {})
            if "X-CSRFToken" not in headers:
                token = super().open("/api/v1/auth/csrf", method="GET").get_json()["csrf_token"]
                headers["X-CSRFToken"] = token
            kwargs["headers"] = headers
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app: Flask, db_session: Any) -> FlaskClient:
    app.test_client_class = CsrfClient
    return app.test_client()


@pytest.fixture
def make_client(app: Flask, db_session: Any) -> Any:
    """Several independent browsers (e.g. a doctor and a patient at once)."""

    def factory() -> FlaskClient:
        app.test_client_class = CsrfClient
        return app.test_client()

    return factory


# ---------------------------------------------------------------- factories

from tests.factories import Factories  # noqa: E402


@pytest.fixture
def factories(db_session: Any) -> Factories:
    return Factories()


@pytest.fixture
def login(factories: Factories) -> Any:
    """Sign a client in as ``user`` through the real sign-in form."""

    def do_login(client: FlaskClient, user: Any, password: str = PASSWORD) -> Any:
        resp = client.post("/sign-in", data={"email": user.email, "password": password})
        assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
        return resp

    return do_login


@pytest.fixture
def bearer_for(factories: Factories) -> Any:
    """An access token as a third-party app would hold after the person allowed it (minted directly)."""
    import secrets

    from app.auth import oauth_service
    from app.auth.oauth_models import OAuthToken, digest

    def mint(user: Any, scope: str, *, audience: str | None = None, patient_id: int | None = None) -> str:
        client, _secret = oauth_service.register_client(oauth_service.ClientInput(
            name="Third-party app", is_public=True, redirect_uris=["https://app.example/cb"], scope=scope,
            grants=["authorization_code"]), by=factories.admin())
        token = secrets.token_urlsafe(32)
        db.session.add(OAuthToken(client_id=client.client_id, user_id=user.id, grant_type="authorization_code",
                                  scope=scope, access_token_hash=digest(token), family_id=secrets.token_hex(16),
                                  user_epoch=user.session_epoch, expires_in=3600, audience=audience,
                                  patient_id=patient_id))
        db.session.commit()
        return token

    return mint


@pytest.fixture
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


# ---------------------------------------------------------------- live server and browser

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[str]:
    """The app served over real HTTP in a background thread, on the real engine (data is committed)."""
    with serve_wsgi(app) as url:
        yield url


@contextlib.contextmanager
def serve_wsgi(wsgi: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port in a background thread; yields its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture
def live_factories(app: Flask, engine: sa.Engine) -> Iterator[Factories]:
    """Factories whose rows are really committed, for tests that drive the live server.

    Use unique names: these rows stay until the run's database is dropped.
    """
    db.session.remove()
    db.session.configure(bind=engine, join_transaction_mode="rollback_only")
    with app.app_context():
        yield Factories()
    db.session.remove()


@pytest.fixture
def playwright_instance() -> Iterator[Any]:
    """Per test, not per session: Playwright's sync API runs an event loop in this thread while it is open,
    and tests of asyncio code that follow must be able to call ``asyncio.run``."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (the CI script does)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def new_browser(playwright_instance: Any, tmp_path: Path) -> Iterator[Any]:
    """Open a fresh Chromium profile (one per person in the test); all are closed afterwards."""
    contexts: list[Any] = []

    def open_context(**options: Any) -> Any:
        """``options`` go to Playwright as they are, e.g. a phone: viewport=..., has_touch=True, is_mobile=True."""
        profile = tmp_path / f"profile{len(contexts)}"
        ctx = playwright_instance.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=False, args=CHROMIUM_ARGS,
            **{"viewport": {"width": 1280, "height": 900}, **options})
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx

    yield open_context
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def browser_login() -> Any:
    """Sign in through the real form in a browser page."""

    def do_login(page: Any, base_url: str, user: Any, password: str = PASSWORD) -> None:
        page.goto(f"{base_url}/sign-in")
        page.fill("#email", user.email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/sign-in" not in url)

    return do_login


# ---------------------------------------------------------------- S3 (moto server mode on loopback)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 endpoint ("127.0.0.1:<port>") served by moto; talk to it through the minio SDK."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).read()  # noqa: S310
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.1)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def s3_clean(s3_server: str) -> str:
    """The S3 endpoint, wiped before the test."""
    import urllib.request

    req = urllib.request.Request(f"http://{s3_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()  # noqa: S310
    return s3_server


@pytest.fixture
def clock() -> Iterator[Any]:
    """The platform clock (``app.clock``), for moving time instead of waiting; back to real time afterwards."""
    from app import clock as app_clock

    app_clock.reset()
    yield app_clock
    app_clock.reset()
