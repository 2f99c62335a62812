"""PostgreSQL restarts under a running app server. The suite's PostgreSQL is shared, so the test runs its own
throwaway server (initdb into a scratch directory, as the ``postgres`` user) and restarts that one."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.cluster.conftest import VENV_BIN, Browser, Cluster, answers, free_port, sign_in, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.fault]

PASSWORD = "restart-test-password-1234"  # noqa: S105


class ThrowawayPostgres:
    """A PostgreSQL server of its own on a free loopback port, with its data and socket in a scratch dir."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.skip("PostgreSQL server binaries are not installed")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="pg-restart-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True,  # noqa: S603
                       timeout=120)

    def ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-l", str(self.dir / "server.log"), *args)

    def start(self) -> None:
        self.ctl("start", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


def test_an_app_server_carries_on_after_postgresql_restarts(cluster: Cluster, own_postgres: ThrowawayPostgres):
    from app.cli import migrate

    migrate(own_postgres.url)
    env = dict(cluster.env, DATABASE_URL=own_postgres.url, HOSPITAL_ADMIN_PASSWORD=PASSWORD)
    subprocess.run([str(VENV_BIN / "hospital"), "create-admin", "--email", "restart@example.org",  # noqa: S603
                    "--name", "Restart Admin"], env=env, check=True, capture_output=True, timeout=120)
    cluster.ports["web_pg"] = free_port()
    saved, cluster.env = cluster.env, env
    try:
        cluster.start_web("web_pg")
    finally:
        cluster.env = saved
    base = cluster.url("web_pg")
    try:
        s = sign_in(base, "restart@example.org", PASSWORD)
        assert s.get(f"{base}/api/v1/me").status_code == 200
        own_postgres.restart()  # while the server is idle: its pooled connection is now dead
        first = s.get(f"{base}/api/v1/me")
        assert first.status_code == 200, first.text[:300]  # the very first request after it succeeds

        stop, seen, crashes = threading.Event(), [], []

        def keep_asking(client: Browser) -> None:
            while not stop.is_set():
                try:
                    resp = client.get(f"{base}/api/v1/me", timeout=10)
                except requests.RequestException as exc:
                    crashes.append(repr(exc))
                    continue
                seen.append(resp.status_code)
                if resp.status_code not in (200, 503):
                    crashes.append(resp.text[:200])
                elif resp.status_code == 503:  # what a user sees while the database is away
                    assert resp.headers["Content-Type"] == "application/problem+json"
                    assert resp.headers["Retry-After"] and "Nothing was saved" in resp.json()["detail"]

        thread = threading.Thread(target=keep_asking, args=(s,))
        thread.start()
        try:
            wait_until(lambda: len(seen) >= 3, "requests before the restart")
            for _ in range(2):
                own_postgres.restart()
                count = len(seen)
                wait_until(lambda c=count: len(seen) > c + 2, "requests after the restart")
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not crashes, crashes[:3]
        # Every request after the restart succeeds, the first one included, with no restart of the app server.
        for _ in range(5):
            assert s.get(f"{base}/api/v1/me").status_code == 200
        fresh = sign_in(base, "restart@example.org", PASSWORD)  # a write: the sign-in is recorded
        assert fresh.get(f"{base}/api/v1/me").json()["email"] == "restart@example.org"
        assert cluster.procs["web_pg"].poll() is None
    finally:
        cluster.stop("web_pg")
        assert not answers(f"{base}/sign-in")
