"""The one client of the media service's internal API: the app pins a consult to a worker, forwards the complete
SDP and never touches media.

A consult is pinned to one media worker the first time it needs one (``ConsultSession.media_worker``); every
later relay and recording call goes there, whatever ``HOSPITAL_MEDIA_WORKERS`` says afterwards.
"""

from __future__ import annotations

from typing import Any

import requests
import sqlalchemy as sa
from flask import current_app

from app import db
from app.catalogue import N_
from app.consults.models import ConsultSession
from app.errors import AppError

UNREACHABLE = "The consult cannot reach the media service. Try again shortly."


class MediaUnavailable(AppError):
    status, slug, title = 503, "media-unavailable", N_("The media service is not reachable")


class MediaUnreachable(MediaUnavailable):
    """No answer at all from a media worker (down, killed, network): the consult may move to another one."""


def call(worker: str, method: str, path: str, body: dict[str, Any] | None, *, ok: tuple[int, ...] = (200,),
         timeout: float = 60, unreachable: str = UNREACHABLE) -> dict[str, Any]:
    """Call ``worker``'s internal API with the shared secret; returns ``{"status", "body"}`` for ``ok`` answers.

    :raises MediaUnavailable: the worker is down or gave another status.
    """
    try:
        resp = requests.request(method, worker + path, json=body, timeout=timeout,
                                headers={"Authorization": f"Bearer {current_app.config['MEDIA_SECRET']}"})
    except requests.RequestException:
        raise MediaUnreachable(unreachable) from None
    if resp.status_code not in ok:
        raise MediaUnavailable(f"The media service answered {resp.status_code}.")
    try:
        parsed = resp.json()
    except ValueError:
        parsed = {}
    return {"status": resp.status_code, "body": parsed if isinstance(parsed, dict) else {}}


def echo_offer(sdp: str) -> dict[str, Any]:
    """Send a browser's offer to the echo service and return its answer.

    :raises MediaUnavailable: the media service is down, refused, or answered nonsense.
    """
    answer = call(current_app.config["MEDIA_URL"].rstrip("/"), "POST", "/echo/offer", {"sdp": sdp, "type": "offer"},
                  ok=(200, 429), timeout=15,
                  unreachable="The device test cannot reach the media service. Try again shortly.")
    if answer["status"] == 429:
        raise MediaUnavailable("The media service is busy. Try again in a minute.", headers={"Retry-After": "30"})
    body = answer["body"]
    if body.get("type") != "answer" or not isinstance(body.get("sdp"), str):
        raise MediaUnavailable("The media service gave an unusable answer.")
    return {"sdp": body["sdp"], "type": "answer"}


def relay_call(worker: str, path: str, body: dict[str, Any], *, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
    """POST to the relay of ``worker``; the answer's body when it is 200, else ``{}``.

    :raises MediaUnavailable: the media worker is down or refused the offer.
    """
    answer = call(worker, "POST", path, body, ok=ok, timeout=30)
    return answer["body"] if answer["status"] == 200 else {}


def relay_room(session: ConsultSession) -> str:
    return f"consult-{session.id}"


def configured_workers() -> list[str]:
    """The relay workers of HOSPITAL_MEDIA_WORKERS (else MEDIA_URL alone)."""
    workers = [w.strip().rstrip("/") for w in current_app.config.get("MEDIA_WORKERS", "").split(",") if w.strip()]
    return workers or [current_app.config["MEDIA_URL"].rstrip("/")]


def pin_worker(session_id: int) -> str:
    """The consult's media worker: the stored one, else pin the least-loaded configured worker (open consults
    pinned to it; ties by session id) with a conditional UPDATE, so two app workers racing for a new consult
    agree. Flushed in the caller's transaction."""
    stored = db.session.scalar(sa.select(ConsultSession.media_worker).where(ConsultSession.id == session_id))
    if stored:
        return stored
    workers = configured_workers()
    load = dict(db.session.execute(
        sa.select(ConsultSession.media_worker, sa.func.count()).where(
            ConsultSession.ended_at.is_(None), ConsultSession.media_worker.in_(workers))
        .group_by(ConsultSession.media_worker)).all())
    ordered = workers[session_id % len(workers):] + workers[:session_id % len(workers)]
    choice = min(ordered, key=lambda w: load.get(w, 0))
    db.session.execute(sa.update(ConsultSession).where(ConsultSession.id == session_id,
                                                       ConsultSession.media_worker.is_(None))
                       .values(media_worker=choice).execution_options(synchronize_session=False))
    pinned = db.session.scalar(sa.select(ConsultSession.media_worker).where(ConsultSession.id == session_id))
    return pinned or choice


def worker_for(session: ConsultSession) -> str:
    """:func:`pin_worker` for a loaded session (kept in step with the row)."""
    worker = pin_worker(session.id)
    if session.media_worker != worker:
        db.session.refresh(session, ["media_worker"])
    return worker


def answers(worker: str) -> bool:
    """Whether ``worker`` answers its health check now (a short timeout: a consult is waiting)."""
    try:
        return requests.get(worker + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False
