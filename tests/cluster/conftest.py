"""Two nodes on this machine, started from the production artifacts: deploy/systemd's ExecStart lines (two
gunicorn app servers, two media workers) behind deploy/nginx.conf, with Redis, the run's PostgreSQL database and
the S3 server (moto). Only ports and scratch paths are changed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
SECRET = "cluster-test-secret-" + "x" * 40
STARTUP_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unit_command(unit: str, instance: int) -> list[str]:
    """The unit's ExecStart, for instance ``instance``, with this checkout's virtualenv in place of /opt's."""
    text = (DEPLOY / "systemd" / unit).read_text()
    line = re.search(r"^ExecStart=(.+)$", text, re.MULTILINE)
    assert line, unit
    argv = shlex.split(line.group(1).replace("%i", str(instance)))
    return [str(VENV_BIN / Path(argv[0]).name), *argv[1:]]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0, proc: Any = None) -> None:
    deadline, pause = time.monotonic() + timeout, 0.02
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return resp.status < 500
    except Exception:  # noqa: BLE001 - not up yet
        return False


class Cuttable:
    """A TCP relay on loopback in front of a server (here S3), which a test can cut: after ``cut_after`` more
    bytes towards the server every connection is dropped and new ones are refused, until :meth:`restore`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._budget: int | None = None
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def down(self) -> bool:
        return self._budget is not None and self._budget <= 0

    def cut_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes

    def restore(self) -> None:
        with self._lock:
            self._budget = None

    def _drop_all(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted:
                    with self._lock:
                        if self._budget is not None:
                            self._budget -= len(data)
                            if self._budget <= 0:
                                self._drop_all()
                                return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Cluster:
    env: dict[str, str]
    tmp: Path
    s3: Cuttable
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def front(self) -> str:
        return self.url("nginx")

    def start(self, name: str, argv: list[str], ready: str | None) -> None:
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                            start_new_session=True)
        if ready:  # generous: the app imports slowly on a loaded machine
            wait_until(lambda: answers(ready), name, timeout=STARTUP_SECONDS, proc=self.procs[name])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def start_web(self, name: str) -> None:
        self.start(name, _web_argv(self.ports[name]), f"{self.url(name)}/sign-in")

    def start_media(self, name: str) -> None:
        self.start(name, unit_command("townhealth-media@.service", self.ports[name]),
                   f"http://127.0.0.1:{self.ports[name]}/health")

    def start_redis(self) -> None:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start("redis", [redis, "--bind", "127.0.0.1", "--port", str(self.ports["redis"]), "--save", "",
                             "--appendonly", "no"], None)

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(pong, "redis", proc=self.procs["redis"])

    def start_nginx(self) -> None:
        conf = (DEPLOY / "nginx.conf").read_text()
        scratch = self.tmp / "nginx"
        scratch.mkdir(exist_ok=True)
        for old, new in (("127.0.0.1:8001", f"127.0.0.1:{self.ports['web_a']}"),
                         ("127.0.0.1:8002", f"127.0.0.1:{self.ports['web_b']}"),
                         ("listen 127.0.0.1:8080", f"listen 127.0.0.1:{self.ports['nginx']}"),
                         ("/run/", f"{scratch}/"), ("/var/log/nginx/", f"{scratch}/"),
                         ("/var/lib/nginx/", f"{scratch}/")):
            assert old in conf, old
            conf = conf.replace(old, new)
        (scratch / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.start("nginx", [nginx, "-c", str(scratch / "nginx.conf"), "-p", str(scratch), "-g", "daemon off;"],
                   f"{self.front}/sign-in")


@pytest.fixture(scope="session")
def cluster(database_url: str, test_config: Any, s3_server: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    ports = {name: free_port() for name in ("web_a", "web_b", "media_a", "media_b", "redis", "nginx")}
    host, port = s3_server.split(":")
    s3 = Cuttable((host, int(port)))
    env = dict(os.environ, PYTHONUNBUFFERED="1", HOSPITAL_ENV="development", SECRET_KEY=SECRET,
               DATABASE_URL=database_url, REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",
               HOSPITAL_INSTANCE_PATH=str(test_config.INSTANCE_PATH), HOSPITAL_OBJECT_STORE="s3",
               S3_ENDPOINT=f"127.0.0.1:{s3.port}", S3_ACCESS_KEY="test", S3_SECRET_KEY="test", S3_BUCKET="cluster",
               S3_SECURE="0", HOSPITAL_MFA_REQUIRED_ROLES="", HOSPITAL_TRUSTED_PROXIES="1",
               HOSPITAL_MEDIA_WORKERS=f"http://127.0.0.1:{ports['media_a']},http://127.0.0.1:{ports['media_b']}",
               HOSPITAL_MEDIA_URL=f"http://127.0.0.1:{ports['media_a']}", HOSPITAL_MEDIA_SECRET=SECRET,
               HOSPITAL_MEDIA_LOOPBACK="1", DICOM_PORT="0", PGAPPNAME="townhealth-cluster")
    c = Cluster(env=env, tmp=tmp, s3=s3, ports=ports)
    try:
        c.start_redis()
        for name in ("media_a", "media_b"):
            c.start_media(name)
        for name in ("web_a", "web_b"):  # started together: each imports the app while the other does
            c.start(name, _web_argv(ports[name]), None)
        for name in ("web_a", "web_b"):
            wait_until(lambda n=name: answers(f"{c.url(n)}/sign-in"), name, timeout=STARTUP_SECONDS,
                       proc=c.procs[name])
        c.start_nginx()
        yield c
    finally:
        for proc in c.procs.values():  # all at once, then wait for each
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name in list(c.procs):
            c.stop(name)


def _web_argv(port: int) -> list[str]:
    argv = unit_command("townhealth-web@.service", port)
    argv[argv.index("--workers") + 1] = "1"  # two cores for the whole test run
    return argv


class Browser(requests.Session):
    """A client that behaves like our pages: unsafe requests carry a fresh CSRF token header (sign-in starts a new
    session, and with it a new token). Any server may answer: they share the secret key."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if method.upper() not in ("GET", "HEAD", "OPTIONS"):
            base = url.split("/", 3)
            token = super().request("GET", "/".join(base[:3]) + "/api/v1/auth/csrf", timeout=10).json()
            kwargs["headers"] = {"X-CSRFToken": token["csrf_token"], **(kwargs.get("headers") or {})}
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


def browser(_base: str = "") -> Browser:
    return Browser()


def sign_in(base: str, email: str, password: str) -> requests.Session:
    s = browser(base)
    resp = s.post(f"{base}/sign-in", data={"email": email, "password": password}, allow_redirects=False)
    assert resp.status_code == 302, resp.text[:300]
    return s


OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"


def consult_across_servers(cluster: Cluster, app: Any, factories: Any) -> tuple[Any, Any, Browser, Browser]:
    """An admitted consult: the doctor signed in and joined on server A, the patient on server B."""
    from tests.conftest import PASSWORD
    from tests.consults.helpers import admitted_consult

    doctor, patient, appt = admitted_consult(factories, app)
    sessions = []
    for base, user in ((cluster.url("web_a"), doctor), (cluster.url("web_b"), patient.user)):
        s = sign_in(base, user.email, PASSWORD)
        token = s.post(f"{base}/api/v1/consults/appointments/{appt.id}/token")
        assert token.status_code == 200, token.text[:300]
        joined = s.post(f"{base}/api/v1/consults/appointments/{appt.id}/join", json={"token": token.json()["token"]})
        assert joined.status_code == 200, joined.text[:300]
        sessions.append(s)
    return doctor, appt, sessions[0], sessions[1]


class Stream:
    """A participant's event stream in a thread, collecting signal ids until told which to expect."""

    def __init__(self, s: Browser, url: str) -> None:
        self.ids: list[int] = []
        self.changed = threading.Condition()
        self.opened, self.stopped = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(s, url), daemon=True)
        self._thread.start()
        assert self.opened.wait(10)

    def _run(self, s: Browser, url: str) -> None:
        after = 0
        while not self.stopped.is_set():  # reconnect like a browser when the stream ends or breaks
            try:
                with s.get(url, params={"after": after}, stream=True, timeout=40) as resp:
                    self.opened.set()
                    for line in resp.iter_lines(decode_unicode=True):
                        if self.stopped.is_set():
                            return
                        if line and line.startswith("data: "):
                            after = json.loads(line.removeprefix("data: "))["id"]
                            with self.changed:
                                self.ids.append(after)
                                self.changed.notify_all()
            except requests.RequestException:
                self.stopped.wait(0.25)  # the page's EventSource retry

    def wait_for(self, ids: set[int], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: ids <= set(self.ids), timeout)


def workers_of(master_pid: int) -> list[int]:
    """gunicorn's worker processes: the master's children."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:
            children.append(int(stat.parent.name))
    return children


def kill_web_worker_while_it_waits(cluster: Cluster, engine: Any, hold: Callable[[Any], None],
                                   send: Callable[[], requests.Response]) -> object:
    """Kill server A's worker (SIGKILL) in the middle of a request's transaction; return what the client got.

    ``hold(connection)`` takes row or table locks on a connection of the test, so that the request ``send``
    makes stops inside its transaction, waiting for them; once PostgreSQL shows it waiting, the worker is
    killed. Then the locks go, the killed request's backend ends (its transaction can never commit), and
    gunicorn's replacement worker answers again.
    """
    import psycopg

    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(send())
        except requests.RequestException as exc:
            outcome.append(exc)

    dsn = str(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    with engine.connect() as blocker, psycopg.connect(dsn, autocommit=True) as watch:
        hold(blocker)
        thread = threading.Thread(target=run)
        thread.start()
        waiting: list[int] = []

        def request_waits() -> bool:
            waiting[:] = [row[0] for row in watch.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'townhealth-cluster' "
                "AND wait_event_type = 'Lock'")]
            return bool(waiting)

        wait_until(request_waits, "the request to wait inside its transaction", timeout=30)
        [worker] = workers_of(cluster.procs["web_a"].pid)
        os.kill(worker, signal.SIGKILL)
        thread.join(timeout=30)
        blocker.rollback()
        wait_until(lambda: not watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                             [waiting]).fetchone(), "the killed request's backend to end",
                   timeout=20)
    wait_until(lambda: len(workers_of(cluster.procs["web_a"].pid)) == 1, "gunicorn to replace the worker")
    wait_until(lambda: answers(f"{cluster.url('web_a')}/sign-in"), "the new worker", timeout=STARTUP_SECONDS)
    assert outcome, "the request never returned"
    return outcome[0]
