"""Video consult figures on this machine (not part of the test suite).

1. Doctor's Admit click -> first remote frame on both sides (two Chromium profiles, fake cameras, median of 10),
   for Admit in the doctor's prepared room and for Admit from the day view; the patient's waiting room turns
   into the consult in place.
2. Signaling requests per second the app sustains (POST an ICE candidate / GET pending messages, 4 clients).
3. Media process memory and CPU per echo session (aiortc clients sending 640x480 video to the echo service).

Runs against a throw-away PostgreSQL database (TEST_PG_ADMIN_URL, default local trust) and the app served by
werkzeug's threaded server in this process (gunicorn in production), plus the media service as a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app, db  # noqa: E402
from app.cli import migrate  # noqa: E402
from app.config import TestConfig  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD  # noqa: E402
from tests.consults.helpers import current_slot  # noqa: E402
from tests.factories import Factories  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-media-secret"  # noqa: S105
FAILED: list[int] = []
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 10))
DEBUG_DB: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_media() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "media", "--port", str(port), "--allow-loopback"],  # noqa: S603
                            cwd=ROOT, env=dict(os.environ, HOSPITAL_MEDIA_SECRET=SECRET),
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(f"{url}/health", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    return proc, url


def sign_in(base: str, email: str) -> requests.Session:
    s = requests.Session()
    s.headers["X-CSRFToken"] = s.get(f"{base}/api/v1/auth/csrf").json()["csrf_token"]
    resp = s.post(f"{base}/sign-in", data={"email": email, "password": PASSWORD}, allow_redirects=False)
    assert resp.status_code == 302, resp.text[:300]
    s.headers["X-CSRFToken"] = s.get(f"{base}/api/v1/auth/csrf").json()["csrf_token"]
    return s


MODES = {"room": "Admit in the prepared room", "day": "Admit from the day view"}


def admit_to_first_frame(app, base: str) -> dict[str, list[float]]:
    """Rounds alternate between the two ways of admitting: in the doctor's prepared room (camera on, joined,
    offer ready before the click) and from the day view (the room page loads after the click). The patient
    waits on the waiting room page, checked in (camera on), which turns into the consult in place."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with sync_playwright() as pw, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        contexts = [pw.chromium.launch_persistent_context(f"{tmp}/{n}", executable_path=CHROMIUM, headless=False,
                                                          args=CHROMIUM_ARGS) for n in ("doctor", "patient")]
        doc, pat = (c.new_page() for c in contexts)
        doc.on("dialog", lambda d: d.accept())
        if os.environ.get("BENCH_DEBUG"):
            for who, page in (("doctor", doc), ("patient", pat)):
                page.on("console", lambda m, who=who: print(who, m.type, m.text))
                page.on("framenavigated", lambda f, who=who: print(who, "->", f.url))
        for _ in range(ROUNDS):
            for mode in MODES:
                with app.app_context():
                    f = Factories()
                    doctor = f.doctor()
                    patient = f.patient(with_account=True, doctor=doctor)
                    appt = current_slot(doctor, patient, by=patient.user)
                    emails, appt_id = (doctor.email, patient.user.email), appt.id
                    db.session.remove()
                for page, email in zip((doc, pat), emails, strict=True):
                    page.context.clear_cookies()
                    page.goto(f"{base}/sign-in")
                    page.fill("#email", email)
                    page.fill("#password", PASSWORD)
                    page.click("button[type=submit]")
                    page.wait_for_url(lambda url: "/sign-in" not in url)
                pat.goto(f"{base}/consults/{appt_id}/waiting")
                pat.click("#check-in")
                pat.wait_for_selector("#status-text:has-text('will admit you')")
                pat.wait_for_selector("#camera-ready:visible")
                if mode == "room":
                    doc.goto(f"{base}/consults/{appt_id}/room")
                    doc.wait_for_selector("#admit-bar[data-ready]", state="attached")
                    button = "#admit-now"
                else:
                    doc.goto(f"{base}/consults/today")
                    button = f"tr[data-appointment='{appt_id}'] button.admit"
                pat.wait_for_timeout(500)  # the waiting room's event stream is open
                t0 = time.time() * 1000
                if os.environ.get("BENCH_DEBUG"):
                    print("T0", mode, int(t0))
                doc.click(button)
                firsts = []
                try:
                    for page in (doc, pat):
                        page.wait_for_selector("#remote-video[data-first-frame-at]", timeout=15_000,
                                               state="attached")
                        firsts.append(float(page.get_attribute("#remote-video", "data-first-frame-at") or 0))
                    times[mode].append(max(firsts) - t0)
                except PlaywrightTimeout:
                    FAILED.append(appt_id)
                    if os.environ.get("BENCH_DEBUG"):
                        for who, page in (("doctor", doc), ("patient", pat)):
                            print("FAILED", mode, who, page.url, page.inner_text("#remote-status"),
                                  page.get_attribute("#quality", "data-frames-decoded"))
                        with psycopg.connect(DEBUG_DB[0], autocommit=True) as conn:
                            for row in conn.execute("SELECT pid, state, wait_event_type, wait_event, "
                                                    "now() - xact_start, left(query, 120) FROM pg_stat_activity "
                                                    "WHERE datname = current_database()"):
                                print("PG", row)
                            for row in conn.execute("SELECT id, sender_id, kind, left(payload, 60) FROM "
                                                    "signal_message WHERE session_id = (SELECT id FROM "
                                                    "consult_session WHERE appointment_id = %s) ORDER BY id",
                                                    (appt_id,)):
                                print("SIG", row)
                doc.click("#end-consult")
                doc.wait_for_url("**/consults/today")
        for c in contexts:
            c.close()
    return times


def signaling_rate(app, base: str, seconds: float = 5.0) -> tuple[float, float]:
    with app.app_context():
        f = Factories()
        doctor = f.doctor()
        patient = f.patient(with_account=True, doctor=doctor)
        appt = current_slot(doctor, patient, by=patient.user)
        from app.consults import service

        service.check_in(appt, by=patient.user)
        service.admit(appt, by=doctor)
        db.session.commit()
        email, appt_id = doctor.email, appt.id
        db.session.remove()
    url = f"{base}/api/v1/consults/appointments/{appt_id}"

    def client() -> requests.Session:
        s = sign_in(base, email)
        token = s.post(f"{url}/token").json()["token"]
        s.post(f"{url}/join", json={"token": token})
        return s

    results = []
    for method in ("POST", "GET"):
        sessions = [client() for _ in range(4)]
        stop = time.monotonic() + seconds
        counts = [0] * len(sessions)

        def run(i: int, method: str = method, sessions: list = sessions, stop: float = stop,
                counts: list = counts) -> None:
            s = sessions[i]
            while time.monotonic() < stop:
                if method == "POST":
                    r = s.post(f"{url}/signals", json={"kind": "candidate", "candidate": None})
                else:
                    r = s.get(f"{url}/signals?after=0")
                assert r.status_code in (200, 201), r.text
                counts[i] += 1

        with ThreadPoolExecutor(len(sessions)) as pool:
            list(pool.map(run, range(len(sessions))))
        results.append(sum(counts) / seconds)
    return results[0], results[1]


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, RSS MiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS")) / 1024
    return cpu, rss


async def echo_sessions(media_url: str, pid: int, n: int, seconds: float = 8.0) -> tuple[float, float]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaBlackhole
    from aiortc.mediastreams import VideoStreamTrack

    from media.server import allow_loopback_candidates

    allow_loopback_candidates()
    peers, holes = [], []
    loop = asyncio.get_running_loop()
    for _ in range(n):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        hole = MediaBlackhole()
        pc.on("track", hole.addTrack)
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        resp = await loop.run_in_executor(None, lambda pc=pc: requests.post(
            f"{media_url}/echo/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"},
            headers={"Authorization": f"Bearer {SECRET}"}, timeout=15))
        await pc.setRemoteDescription(RTCSessionDescription(**{k: resp.json()[k] for k in ("sdp", "type")}))
        await hole.start()
        peers.append(pc)
        holes.append(hole)
    await asyncio.sleep(2)
    cpu0, _ = proc_usage(pid)
    await asyncio.sleep(seconds)
    cpu1, rss = proc_usage(pid)
    for hole in holes:
        await hole.stop()
    for pc in peers:
        await pc.close()
    await asyncio.sleep(1)
    return 100 * (cpu1 - cpu0) / seconds, rss


def main() -> None:
    name = f"hospital_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    media, media_url = start_media()
    try:
        cfg = TestConfig()
        cfg.DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
        cfg.INSTANCE_PATH = Path(tempfile.mkdtemp())
        cfg.MEDIA_URL, cfg.MEDIA_SECRET = media_url, SECRET
        cfg.SIGNAL_RATE_LIMIT = 10**9
        cfg.REDIS_URL = os.environ.get("REDIS_URL", "")  # set it to measure Redis wake-ups
        migrate(cfg.DATABASE_URL)
        DEBUG_DB.append(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        app = create_app(cfg)
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"

        times = admit_to_first_frame(app, base)
        post_rate, get_rate = signaling_rate(app, base)
        _, idle_rss = proc_usage(media.pid)
        usage = {n: asyncio.run(echo_sessions(media_url, media.pid, n)) for n in (1, 2, 4)}
        server.shutdown()

        print(f"shared state: {'Redis + PostgreSQL' if cfg.REDIS_URL else 'PostgreSQL only'}")
        print(f"{'measure':<58} {'value':>14}")
        print("-" * 73)
        for mode, label in MODES.items():
            got = times[mode]
            print(f"{f'{label} -> first frame, both sides (median of {len(got)})':<58} "
                  f"{statistics.median(got) if got else float('nan'):>11.0f} ms")
            print(f"{'  min / max':<58} {min(got, default=0):>6.0f} / {max(got, default=0):.0f} ms")
        print(f"{'Rounds without a picture within 15 s':<58} {len(FAILED):>10} / {2 * ROUNDS}")
        print(f"{'Signaling POST (ICE candidate), 4 clients':<58} {post_rate:>10.0f} req/s")
        print(f"{'Signaling GET (poll), 4 clients':<58} {get_rate:>10.0f} req/s")
        print(f"{'Media process idle RSS':<58} {idle_rss:>10.1f} MiB")
        for n, (cpu, rss) in usage.items():
            print(f"{f'Echo, {n} session(s) 640x480: CPU % of one core / RSS':<58} {cpu:>6.1f} % {rss:>6.0f} MiB")
        print(f"{'Echo CPU per session (from the 4-session run)':<58} {usage[4][0] / 4:>10.1f} %")
    finally:
        from app.consults import wake

        wake.stop()
        media.terminate()
        media.wait(10)
        db.session.remove()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
