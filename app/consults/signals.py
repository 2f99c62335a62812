"""Consult signaling: queue a message for the other pages of a consult and wake their event streams at commit.

Every module of the consult domain that tells the pages something (service, invites, recordings) goes through
:func:`send`, so the row-lock ordering and the wake-up rules live in one place.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app

from app import db
from app.auth.models import User
from app.consults import wake
from app.consults.models import ConsultSession, SignalMessage

_WAKE_KEY = "consult_wake"


def send(session: ConsultSession, by: User, kind: str, payload: dict[str, Any],
         recipient_id: int | None = None) -> SignalMessage:
    """Queue a message for the consult's other participants (visible, and their streams woken, at commit).

    The first signal of a transaction locks the consult's row until commit, after the transaction's other
    writes (rows first, this lock last, so it cannot deadlock with joins and leaves). A consult's signals thus
    commit in id order, and a stream that has read id N can never miss a smaller id committed later (an
    answer overtaken by its own ICE candidates, say). SQLite serialises all writers anyway.
    """
    wakes = db.session().info.setdefault(_WAKE_KEY, set())
    if session.id not in wakes:
        db.session.flush()
        db.session.execute(sa.select(ConsultSession.id).where(ConsultSession.id == session.id)
                           .with_for_update(key_share=True))
        if not current_app.config["REDIS_URL"] and db.session.get_bind().dialect.name == "postgresql":
            wake.pg_notify(db.session, session.id)  # other workers' streams, delivered on commit
    message = SignalMessage(session_id=session.id, sender_id=by.id, recipient_id=recipient_id, kind=kind,
                            payload=json.dumps(payload, separators=(",", ":")))
    db.session.add(message)
    db.session.flush()
    wakes.add(session.id)
    return message


@sa.event.listens_for(so.Session, "after_commit")
def _wake_streams(session: so.Session) -> None:
    """Wake the consult's event streams (after the rows are visible): this worker's at once, the other
    workers' through Redis when configured (PostgreSQL's NOTIFY was queued in the transaction itself)."""
    ids = session.info.pop(_WAKE_KEY, None)
    if ids:
        redis_url = current_app.config["REDIS_URL"]
        for session_id in ids:
            wake.notify(session_id)
            if redis_url:
                from app.consults import shared

                shared.wake(session_id)


@sa.event.listens_for(so.Session, "after_rollback")
def _forget_wakes(session: so.Session) -> None:
    session.info.pop(_WAKE_KEY, None)


def move_to_relay(session: ConsultSession, *, by: User, reason: str) -> bool:
    """Put the consult in relay mode and tell the pages (signal ``mode``, once); True if it was peer to peer."""
    if session.media_mode == "relay":
        return False
    session.media_mode = "relay"
    send(session, by, "mode", {"mode": "relay", "reason": reason})
    return True
