"""Client of the media service's internal API: the app forwards the complete SDP and never touches media."""

from __future__ import annotations

from typing import Any

import requests
from flask import current_app

from app.errors import AppError
from app.i18n import N_


class MediaUnavailable(AppError):
    status, slug, title = 503, "media-unavailable", N_("The media service is not reachable")


class MediaUnreachable(MediaUnavailable):
    """No answer at all from a media worker (down, killed, network): the consult may move to another one."""


def echo_offer(sdp: str) -> dict[str, Any]:
    """Send a browser's offer to the echo service and return its answer.

    :raises MediaUnavailable: the media service is down, refused, or answered nonsense.
    """
    url = current_app.config["MEDIA_URL"].rstrip("/") + "/echo/offer"
    try:
        resp = requests.post(url, json={"sdp": sdp, "type": "offer"}, timeout=15,
                             headers={"Authorization": f"Bearer {current_app.config['MEDIA_SECRET']}"})
    except requests.RequestException:
        raise MediaUnavailable("The device test cannot reach the media service. Try again shortly.") from None
    if resp.status_code == 429:
        raise MediaUnavailable("The media service is busy. Try again in a minute.", headers={"Retry-After": "30"})
    if resp.status_code != 200:
        raise MediaUnavailable(f"The media service answered {resp.status_code}.")
    body = resp.json()
    if not isinstance(body, dict) or body.get("type") != "answer" or not isinstance(body.get("sdp"), str):
        raise MediaUnavailable("The media service gave an unusable answer.")
    return {"sdp": body["sdp"], "type": "answer"}


def relay_worker(session_id: int) -> str:
    """The media worker a consult is pinned to (``consult_session.media_worker``); the first call pins the
    least-loaded worker of HOSPITAL_MEDIA_WORKERS (else MEDIA_URL). See ``app.consults.recordings.worker_for``."""
    from app.consults.recordings import pin_worker  # recordings imports this module

    return pin_worker(session_id)


def relay_call(worker: str, path: str, body: dict[str, Any], *, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
    """POST to the relay of ``worker`` with the shared secret.

    :raises MediaUnavailable: the media worker is down or refused the offer.
    """
    try:
        resp = requests.post(worker + path, json=body, timeout=30,
                             headers={"Authorization": f"Bearer {current_app.config['MEDIA_SECRET']}"})
    except requests.RequestException:
        raise MediaUnreachable("The consult cannot reach the media service. Try again shortly.") from None
    if resp.status_code not in ok:
        raise MediaUnavailable(f"The media service answered {resp.status_code}.")
    return resp.json() if resp.status_code == 200 else {}


def answers(worker: str) -> bool:
    """Whether ``worker`` answers its health check now (a short timeout: a consult is waiting)."""
    try:
        return requests.get(worker + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False
