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
DEMO_SCANNER_PORT = 11113  # where C-MOVE sends the demo scanner's retrievals
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


def sweep_objects(cfg: Config, *, grace_minutes: float | None) -> int:
    """Delete DICOM objects left without a row by a process killed mid-upload (see ``app.imaging.orphans``)."""
    from datetime import timedelta

    from app.imaging import orphans

    grace = orphans.SWEEP_GRACE if grace_minutes is None else timedelta(minutes=grace_minutes)
    return _with_app(cfg, lambda _app: orphans.sweep(older_than=grace))  # type: ignore[return-value]


def send_notifications(cfg: Config) -> int:
    from app import db
    from app.notify.service import deliver_pending

    def run_job(app: Flask) -> int:
        sent = deliver_pending(app.config)
        db.session.commit()
        return sent

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def reading_tick(cfg: Config) -> dict[str, list[int]]:
    """Escalate critical results nobody acknowledged in time; release held reports past their deadline."""
    from app import db
    from app.reading import outputs
    from app.reading import service as reading

    def run_job(_app: Flask) -> dict[str, list[int]]:
        done = {"escalated": reading.escalate_unacknowledged(), "released": reading.release_due()}
        db.session.commit()
        done["stored"] = outputs.write_back_pending()
        return done

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def consult_reminders(cfg: Config) -> list[int]:
    """Queue the reminders now due before consults (each exactly once, even with several ticks at once)."""
    from app import db
    from app.consults import reminders

    def run_job(_app: Flask) -> list[int]:
        ids = reminders.send_due()
        db.session.commit()
        return ids

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def worker(cfg: Config, *, interval: float = 15.0, expiry_every: float = 3600.0) -> int:
    """Background loop for ``hospital run``: queue consult reminders, send queued notifications, delete objects
    left by uploads cut short, seal (and forward) the audit trail, expire uncollected medicine hourly."""
    from app import create_app, db
    from app.consults import reminders
    from app.imaging import orphans
    from app.notify.service import deliver_pending
    from app.pharmacy.service import expire_uncollected
    from app.reading import outputs as reading_outputs
    from app.reading import service as reading

    app = create_app(cfg)
    last_expiry = 0.0
    while True:
        with app.app_context():
            if time.monotonic() - last_expiry >= expiry_every:
                expire_uncollected()
                db.session.commit()
                orphans.sweep()
                last_expiry = time.monotonic()
            reading.escalate_unacknowledged()
            reading.release_due()
            db.session.commit()
            reading_outputs.write_back_pending()
            reminders.send_due()
            db.session.commit()
            deliver_pending(app.config)
            db.session.commit()
            orphans.purge()
            _seal_and_forward(cfg)
        time.sleep(interval)


def _seal_and_forward(cfg: Config) -> None:
    """One round of audit sealing and forwarding; a failure is reported and retried next round."""
    from app import db
    from app.audit import chain, export

    try:
        chain.seal(max_wait=5.0)
        db.session.commit()
        if cfg.AUDIT_SYSLOG_URL:
            export.forward_to_syslog(cfg.AUDIT_SYSLOG_URL)
            db.session.commit()
    except (chain.SealWaitTimeout, export.SyslogUnreachable) as exc:
        db.session.commit()  # what was sent before the collector went away stays marked as sent
        print(f"audit: {exc}; trying again next round", file=sys.stderr)


def audit_seal(cfg: Config) -> int:
    from app import db
    from app.audit import chain

    def run_job(_app: Flask) -> int:
        try:
            report = chain.seal()
        except chain.SealWaitTimeout as exc:
            print(f"Not sealed: {exc}. Try again later.", file=sys.stderr)
            return 1
        db.session.commit()
        print(f"Sealed {report.events} event(s) in {report.seals} seal(s); the trail is sealed through event "
              f"#{report.sealed_through}.")
        return 0

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def audit_verify(cfg: Config) -> int:
    """Recompute the trail's hash chain; exit status 1 and the first broken link if it does not match."""
    from app.audit import chain

    def run_job(_app: Flask) -> int:
        result = chain.verify()
        sealed = result.last_sealed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if result.last_sealed_at else "never"
        print(f"{result.events_checked} sealed event(s) checked in {result.seals} seal(s), sealed through event "
              f"#{result.sealed_through} (last sealed {sealed}); {result.unsealed} newer event(s) not sealed yet.")
        broken = result.first_break
        if broken is None:
            print("The audit trail is intact.")
            return 0
        when = f" (recorded {broken.occurred_at:%Y-%m-%d %H:%M:%S UTC})" if broken.occurred_at else ""
        print(f"BROKEN: first broken link at event #{broken.event_id}{when}: {broken.reason}")
        return 1

    return _with_app(cfg, run_job)  # type: ignore[return-value]


def audit_export(cfg: Config, *, fhir: str | None, syslog: str | None, after: int) -> int:
    from app import db
    from app.audit import export

    def run_job(_app: Flask) -> int:
        if fhir:
            out = sys.stdout if fhir == "-" else open(fhir, "w", encoding="utf-8")  # noqa: SIM115
            try:
                lines = 0
                for line in export.fhir_ndjson(after=after):
                    out.write(line)
                    lines += 1
            finally:
                if out is not sys.stdout:
                    out.close()
            print(f"Wrote {lines} FHIR AuditEvent(s)", file=sys.stderr)
        if syslog:
            try:
                sent = export.forward_to_syslog(syslog)
            except export.SyslogUnreachable as exc:
                db.session.commit()
                print(f"{exc}", file=sys.stderr)
                return 1
            db.session.commit()
            print(f"Forwarded {sent} event(s) to {syslog}", file=sys.stderr)
        return 0

    return _with_app(cfg, run_job)  # type: ignore[return-value]
@service("dicom")
def _dicom(cfg: Config) -> list[str] | None:
    """The DICOM listener for clinic scanners and PACS (off when DICOM_PORT is 0)."""
    if cfg.DICOM_PORT <= 0:
        return None
    argv = [sys.executable, "-m", "app.imaging.scp", "--host", cfg.DICOM_HOST, "--port", str(cfg.DICOM_PORT)]
    if not cfg.DICOM_ALLOWED_AETS and cfg.DATABASE_URL.startswith("sqlite"):
        # The embedded demo (production refuses SQLite): a scanner calling as DEMO_SCANNER_AET files its scans
        # under the demo town clinic, so `storescu` works against `make run` without configuration.
        # It may also search, retrieve (C-GET, or C-MOVE to a storescp on port DEMO_SCANNER_PORT) and read the
        # worklist; admins change that, or add peers, under Admin > DICOM peers.
        argv += ["--allow", f"{DEMO_SCANNER_AET}=TOWN@127.0.0.1:{DEMO_SCANNER_PORT}"]
        print(f"DICOM listener on {cfg.DICOM_HOST}:{cfg.DICOM_PORT} (AE {cfg.DICOM_AE_TITLE}) accepts the demo "
              f"scanner AE title {DEMO_SCANNER_AET} (C-MOVE sends to 127.0.0.1:{DEMO_SCANNER_PORT}); manage "
              "peers under DICOM peers as an admin")
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


def rotate_oauth_key(cfg: Config, *, create: bool = False) -> int:
    """Let the published next key sign and publish a new next key; retired keys stay in the JWKS until their
    tokens expire. Refuses a key file that does not exist yet (unless ``create``): the command then runs with
    another instance path than the server's, and rotating there would change nothing the server uses."""
    from app import create_app
    from app.auth.oauth2 import KeyRotationTooSoon, jwks_path, rotate_signing_key

    app = create_app(cfg)
    with app.app_context():
        path = jwks_path()
        if not path.exists() and not create:
            print(f"No signing keys at {path}: this is not the server's instance path (set HOSPITAL_INSTANCE_PATH "
                  "or OAUTH_JWKS_PATH as the server has them), or run with --create for a new server.",
                  file=sys.stderr)
            return 2
        try:
            kid = rotate_signing_key(path)
        except KeyRotationTooSoon as exc:
            print(f"Not rotated: {exc}.", file=sys.stderr)
            return 3
        print(f"Signing key {kid} now signs; a new next key is published in {path}")
    return 0


def oauth_client(cfg: Config, args: argparse.Namespace) -> int:
    """Register, edit, list OAuth clients or rotate a secret, as the administrator named by ``--as``."""
    import json as jsonlib

    from app import create_app, db
    from app.auth import oauth_service
    from app.auth import service as accounts
    from app.errors import AppError

    app = create_app(cfg)
    with app.app_context():
        admin = accounts.find_by_email(args.as_email)
        if admin is None:
            print(f"No account {args.as_email}: name an administrator with --as.", file=sys.stderr)
            return 2
        try:
            if args.action == "list":
                for c in oauth_service.list_clients(by=admin):
                    kind = "public" if c.is_public else c.auth_method
                    print(f"{c.client_id}\t{c.name}\t{kind}\t{'active' if c.active else 'disabled'}\t"
                          f"{' '.join(c.redirect_uris)}\t{' '.join(c.web_origins)}\t{c.allowed_scope}")
                db.session.commit()
                return 0
            if args.action == "rotate-secret":
                client = oauth_service.find_client(args.client_id, by=admin)
                secret = oauth_service.rotate_secret(client, by=admin)
                db.session.commit()
                print(f"New client secret (shown only now): {secret}")
                return 0
            jwks = jsonlib.loads(Path(args.jwks_file).read_text()) if args.jwks_file else None
            service_user = accounts.find_by_email(args.service_account) if args.service_account else None
            if args.action == "add":
                data = oauth_service.ClientInput(
                    name=args.name or "", is_public=args.public, redirect_uris=args.redirect_uri or [],
                    scope=" ".join(args.scope or []), grants=args.grant or ["authorization_code", "refresh_token"],
                    service_user_id=service_user.id if service_user else None, web_origins=args.origin or [],
                    auth_method="private_key_jwt" if jwks else "client_secret_basic", jwks=jwks)
                client, secret = oauth_service.register_client(data, by=admin)
            else:
                client = oauth_service.find_client(args.client_id, by=admin)
                data = oauth_service.ClientInput(
                    name=args.name or client.name, is_public=client.is_public,
                    redirect_uris=client.redirect_uris if args.redirect_uri is None else args.redirect_uri,
                    scope=client.allowed_scope if args.scope is None else " ".join(args.scope),
                    grants=client.allowed_grants if args.grant is None else args.grant,
                    service_user_id=service_user.id if service_user else client.service_user_id,
                    web_origins=client.web_origins if args.origin is None else args.origin,
                    auth_method=client.auth_method, jwks=jwks or client.jwks)
                client, secret = oauth_service.update_client(client, data, by=admin), None
            db.session.commit()
        except AppError as exc:
            db.rollback()
            problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in (exc.errors or {}).items())
            print(f"{exc.detail} {problems}".strip(), file=sys.stderr)
            return 1
        print(f"client_id: {client.client_id}")
        if secret:
            print(f"client_secret (shown only now): {secret}")
    return 0


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
        [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", "--workers", str(workers),
         "--bind", f"{host}:{port}", "--access-logfile", "-", "wsgi:app"], cwd=ROOT, env=env)
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


def backup(cfg: Config, target: str) -> int:
    from app.backup import BackupError
    from app.backup import backup as run_backup

    try:
        report = run_backup(cfg, target)
    except BackupError as exc:
        print(f"Backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"Backed up the database ({report.database_bytes} bytes) and {report.objects} object(s) "
          f"({report.object_bytes} bytes) to {target}.")
    return 0


def restore(cfg: Config, source: str) -> int:
    """Load a backup into an empty database and object store, then check every scan, recording and the audit chain."""
    from app.backup import BackupError, Check, check_restored
    from app.backup import restore as run_restore

    try:
        report = run_restore(cfg, source)
    except BackupError as exc:
        print(f"Restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"Restored the database and {report.objects} object(s) ({report.object_bytes} bytes) from {source}.")
    check: Check = _with_app(cfg, lambda _app: check_restored())  # type: ignore[assignment]
    for problem in check.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    print(f"Checked {check.objects_checked} scan and recording object(s) against their SHA-256; "
          f"audit trail {'intact' if check.audit_intact else 'BROKEN (run hospital audit-verify)'}.")
    return 0 if check.audit_intact and not check.problems else 1


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
    p_rotate = sub.add_parser("oauth-rotate-key", help="let the published next signing key sign; publish a new one")
    p_rotate.add_argument("--create", action="store_true", help="create the key file (a new server)")
    p_client = sub.add_parser("oauth-client", help="register, edit or list OAuth client apps")
    p_client.add_argument("action", choices=["add", "edit", "list", "rotate-secret"])
    p_client.add_argument("client_id", nargs="?", help="the client to edit or rotate")
    p_client.add_argument("--as", dest="as_email", required=True, help="email of the administrator acting")
    p_client.add_argument("--name")
    p_client.add_argument("--public", action="store_true", help="a public app (browser or native; PKCE, no secret)")
    p_client.add_argument("--redirect-uri", action="append", help="repeat for several")
    p_client.add_argument("--origin", action="append", help="browser origin allowed by CORS; repeat for several")
    p_client.add_argument("--scope", action="append", help="allowed scopes; repeat or quote a list")
    p_client.add_argument("--grant", action="append", choices=["authorization_code", "refresh_token",
                                                               "client_credentials"])
    p_client.add_argument("--service-account", help="email of the staff account a machine client acts as")
    p_client.add_argument("--jwks-file", help="public keys (JWK set) for private_key_jwt authentication")
    sub.add_parser("expire-dispenses", help="cancel medicine not collected by the pickup deadline")
    p_sweep = sub.add_parser("sweep-objects", help="delete DICOM objects that no row names (uploads cut short)")
    p_sweep.add_argument("--grace-minutes", type=float, default=None,
                         help="only objects older than this (default: 360; 0 only when no upload is running)")
    sub.add_parser("send-notifications", help="send queued notifications once")
    sub.add_parser("reading-tick", help="escalate unacknowledged critical results, release held reports due")
    sub.add_parser("consult-reminders", help="queue the reminders due before consults (email, SMS)")
    sub.add_parser("worker", help="loop: consult reminders, send notifications, seal the audit trail, expire "
                                  "uncollected medicine, reading-tick")
    sub.add_parser("audit-seal", help="chain the audit events written since the last seal into the trail")
    sub.add_parser("audit-verify", help="check the audit trail's hash chain; exit 1 at the first broken link")
    p_export = sub.add_parser("audit-export", help="export sealed audit events as FHIR AuditEvent or to syslog")
    p_export.add_argument("--fhir", metavar="FILE", help="write FHIR AuditEvent NDJSON to FILE ('-': stdout)")
    p_export.add_argument("--syslog", metavar="URL",
                          help="forward the events not yet sent to udp://host:port or tcp://host:port (RFC 5424)")
    p_export.add_argument("--after", type=int, default=0, help="FHIR export: start after this event id")
    p_backup = sub.add_parser("backup", help="dump the database and copy every object to a directory or s3://bucket")
    p_backup.add_argument("target", help="a directory, or s3://bucket on the configured S3 endpoint")
    p_restore = sub.add_parser("restore", help="load a backup into an empty database and object store, and check it")
    p_restore.add_argument("source", help="the directory or s3://bucket the backup was written to")
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
        return rotate_oauth_key(cfg, create=args.create)
    elif args.cmd == "oauth-client":
        if args.action in ("edit", "rotate-secret") and not args.client_id:
            parser.error(f"oauth-client {args.action} needs a client_id")
        return oauth_client(cfg, args)
    elif args.cmd == "expire-dispenses":
        ids = expire_dispenses(cfg)
        print(f"Cancelled {len(ids)} uncollected dispense(s): {ids}")
    elif args.cmd == "sweep-objects":
        print(f"Deleted {sweep_objects(cfg, grace_minutes=args.grace_minutes)} object(s) that no row names")
    elif args.cmd == "send-notifications":
        print(f"Sent {send_notifications(cfg)} notification(s)")
    elif args.cmd == "reading-tick":
        done = reading_tick(cfg)
        print(f"Escalated {len(done['escalated'])} critical result(s); released {len(done['released'])} report(s); "
              f"stored {len(done['stored'])} report(s) in their studies")
    elif args.cmd == "consult-reminders":
        ids = consult_reminders(cfg)
        print(f"Reminded {len(ids)} consult(s): {ids}")
    elif args.cmd == "audit-seal":
        return audit_seal(cfg)
    elif args.cmd == "audit-verify":
        return audit_verify(cfg)
    elif args.cmd == "audit-export":
        if not (args.fhir or args.syslog):
            parser.error("audit-export needs --fhir FILE or --syslog URL")
        return audit_export(cfg, fhir=args.fhir, syslog=args.syslog, after=args.after)
    elif args.cmd == "backup":
        return backup(cfg, args.target)
    elif args.cmd == "restore":
        return restore(cfg, args.source)
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
