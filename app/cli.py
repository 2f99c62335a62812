"""The ``hospital`` command: migrate, seed, and run the whole platform (web app + media service + listeners).

``make run`` calls ``hospital run``; production runs ``hospital migrate`` as a deploy step and starts the
processes under its own supervisor.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask

from app.config import ROOT, Config

ServiceArgv = Callable[[Config], list[str] | None]
DEMO_SCANNER_AET = "DEMOSCANNER"
SERVICES: dict[str, ServiceArgv] = {}
"""Background processes started by ``hospital run`` beside the web server, by name."""


def service(name: str) -> Callable[[ServiceArgv], ServiceArgv]:
    def register(fn: ServiceArgv) -> ServiceArgv:
        SERVICES[name] = fn
        return fn

    return register


@service("media")
def _media(cfg: Config) -> list[str]:
    from urllib.parse import urlsplit

    url = urlsplit(cfg.MEDIA_URL)
    return [sys.executable, "-m", "media", "--host", url.hostname or "127.0.0.1", "--port", str(url.port or 8765)]


@service("worker")
def _worker(_cfg: Config) -> list[str]:
    return [sys.executable, "-c", "from app.cli import main; raise SystemExit(main(['worker']))"]


def _with_app(cfg: Config, fn: Callable[[Flask], object]) -> object:
    from app import create_app

    app = create_app(cfg)
    with app.app_context():
        return fn(app)


def expire_dispenses(cfg: Config) -> list[int]:
    """Cancel medicine not collected within HOSPITAL_PICKUP_DEADLINE_DAYS; notify patient and doctor."""
    from app import db
    from app.pharmacy.service import expire_uncollected

    def run_job(_app: Flask) -> list[int]:
        ids = expire_uncollected()
        db.session.commit()
        return ids

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def send_notifications(cfg: Config) -> int:
    from app import db
    from app.notify.service import deliver_pending

    def run_job(app: Flask) -> int:
        sent = deliver_pending(app.config)
        db.session.commit()
        return sent

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def worker(cfg: Config, *, interval: float = 15.0, expiry_every: float = 3600.0) -> int:
    """Background loop for ``hospital run``: send queued notifications, expire uncollected medicine hourly."""
    from app import create_app, db
    from app.notify.service import deliver_pending
    from app.pharmacy.service import expire_uncollected

    app = create_app(cfg)
    last_expiry = 0.0
    while True:
        with app.app_context():
            if time.monotonic() - last_expiry >= expiry_every:
                expire_uncollected()
                db.session.commit()
                last_expiry = time.monotonic()
            deliver_pending(app.config)
            db.session.commit()
        time.sleep(interval)
@service("dicom")
def _dicom(cfg: Config) -> list[str] | None:
    """The DICOM C-STORE/C-ECHO listener for clinic scanners (off when DICOM_PORT is 0)."""
    if cfg.DICOM_PORT <= 0:
        return None
    argv = [sys.executable, "-m", "app.imaging.scp", "--host", cfg.DICOM_HOST, "--port", str(cfg.DICOM_PORT)]
    if not cfg.DICOM_ALLOWED_AETS and cfg.DATABASE_URL.startswith("sqlite"):
        # The embedded demo (production refuses SQLite): a scanner calling as DEMO_SCANNER_AET files its scans
        # under the demo town clinic, so `storescu` works against `make run` without configuration.
        argv += ["--allow", f"{DEMO_SCANNER_AET}=TOWN"]
        print(f"DICOM listener on {cfg.DICOM_HOST}:{cfg.DICOM_PORT} (AE {cfg.DICOM_AE_TITLE}) accepts the demo "
              f"scanner AE title {DEMO_SCANNER_AET}; set DICOM_ALLOWED_AETS to choose your own")
    return argv


def alembic_config(url: str | None = None) -> AlembicConfig:
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def _print_passwords(passwords: dict[str, str], title: str) -> None:
    print(f"\n{title}\n" + "-" * len(title))
    width = max(len(e) for e in passwords)
    for email, password in passwords.items():
        print(f"  {email.ljust(width)}  {password}")
    print("These passwords are shown only now. `hospital demo-passwords` issues new ones.\n")


def seed(cfg: Config) -> None:
    from app import create_app, db
    from app.seed import seed_demo

    app = create_app(cfg)
    with app.app_context():
        passwords = seed_demo()
        db.session.commit()
    if passwords:
        _print_passwords(passwords, "Demo accounts created")
    else:
        print("Demo data already present; reusing it.")


def create_admin(cfg: Config, *, email: str, name: str) -> None:
    import getpass

    from app import create_app, db
    from app.auth import service as auth
    from app.auth.models import Role

    password = os.environ.get("HOSPITAL_ADMIN_PASSWORD") or getpass.getpass("Password for the new admin: ")
    app = create_app(cfg)
    with app.app_context():
        auth.create_user(email=email, full_name=name, password=password, role=Role.ADMIN, facility_id=None,
                         by=None, must_change_password=False)
        db.session.commit()
    print(f"Administrator {email} created.")


def reset_passwords(cfg: Config) -> None:
    from app import create_app, db
    from app.seed import reset_demo_passwords

    app = create_app(cfg)
    with app.app_context():
        passwords = reset_demo_passwords()
        db.session.commit()
    _print_passwords(passwords, "New demo passwords")


def rotate_oauth_key(cfg: Config) -> None:
    """Make a new OpenID Connect signing key current; retired keys stay in the JWKS until their tokens expire."""
    from app import create_app
    from app.auth.oauth2 import jwks_path, rotate_signing_key

    app = create_app(cfg)
    with app.app_context():
        kid = rotate_signing_key()
        print(f"New signing key {kid} in {jwks_path()}")


def run(cfg: Config, *, host: str, port: int, workers: int) -> int:
    """Migrate, seed on first run, then supervise the web server and every background service."""
    migrate(cfg.DATABASE_URL)
    seed(cfg)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, argv_for in SERVICES.items():
        argv = argv_for(cfg)
        if argv:
            procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env)  # noqa: S603 - our own module
    procs["web"] = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", "8", "--bind", f"{host}:{port}",
         "--access-logfile", "-", "--graceful-timeout", "5", "wsgi:app"], cwd=ROOT, env=env)
    print(f"Town Health is running at http://{host}:{port}  (Ctrl+C to stop)")

    stopping = False

    def _stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping everything", file=sys.stderr)
                code, stopping = proc.returncode or 1, True
                break
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hospital", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_migrate = sub.add_parser("migrate", help="apply database migrations (default: to head)")
    p_migrate.add_argument("revision", nargs="?", default="head")
    p_down = sub.add_parser("downgrade", help="revert migrations to a revision (e.g. base)")
    p_down.add_argument("revision")
    sub.add_parser("seed", help="create the demo data if the database is empty")
    p_admin = sub.add_parser("create-admin", help="create an administrator account (asks for the password)")
    p_admin.add_argument("--email", required=True)
    p_admin.add_argument("--name", required=True)
    sub.add_parser("demo-passwords", help="issue new passwords for the demo accounts")
    sub.add_parser("oauth-rotate-key", help="add a new OpenID Connect signing key and retire the current one")
    sub.add_parser("expire-dispenses", help="cancel medicine not collected by the pickup deadline")
    sub.add_parser("send-notifications", help="send queued notifications once")
    sub.add_parser("worker", help="loop: send notifications, expire uncollected medicine")
    p_run = sub.add_parser("run", help="migrate, seed, and serve the whole platform")
    p_run.add_argument("--host", default=os.environ.get("HOSPITAL_HOST", "127.0.0.1"))
    p_run.add_argument("--port", type=int, default=int(os.environ.get("HOSPITAL_PORT", "5000")))
    p_run.add_argument("--workers", type=int, default=int(os.environ.get("HOSPITAL_WEB_WORKERS", "2")))
    args = parser.parse_args(argv)
    cfg = Config.from_env()
    cfg.validate()
    if args.cmd == "migrate":
        migrate(cfg.DATABASE_URL, args.revision)
    elif args.cmd == "downgrade":
        downgrade(cfg.DATABASE_URL, args.revision)
    elif args.cmd == "seed":
        seed(cfg)
    elif args.cmd == "create-admin":
        create_admin(cfg, email=args.email, name=args.name)
    elif args.cmd == "demo-passwords":
        reset_passwords(cfg)
    elif args.cmd == "oauth-rotate-key":
        rotate_oauth_key(cfg)
    elif args.cmd == "expire-dispenses":
        ids = expire_dispenses(cfg)
        print(f"Cancelled {len(ids)} uncollected dispense(s): {ids}")
    elif args.cmd == "send-notifications":
        print(f"Sent {send_notifications(cfg)} notification(s)")
    elif args.cmd == "worker":
        return worker(cfg)
    elif args.cmd == "run":
        return run(cfg, host=args.host, port=args.port, workers=args.workers)
    return 0


def register(app: Flask) -> None:
    """Expose the same operations as ``flask --app wsgi <command>``."""

    @app.cli.command("seed")
    def _seed() -> None:
        """Create the demo data if the database is empty."""
        seed(Config.from_env())
