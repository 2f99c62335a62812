"""Queue notifications and deliver the outbox.

Other domains only call :func:`enqueue`; it flushes in the caller's transaction, so a booking that is rolled
back never notifies anyone. Delivery (``hospital notify`` / the ``notify`` service) runs outside requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa

from app import db
from app.auth.models import User
from app.notify.models import Notification, NotificationStatus

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 5


class Sender(Protocol):
    def send(self, notification: Notification) -> None:
        """Deliver one message or raise."""


class ConsoleSender:
    """Default sender: logs that a message went out (ids only; the text stays in the database)."""

    def send(self, notification: Notification) -> None:
        logger.info("notification %s to user %s via %s", notification.id, notification.recipient_id,
                    notification.channel)


SENDERS: dict[str, type] = {"console": ConsoleSender}
"""Pluggable senders by name (``HOSPITAL_NOTIFY_SENDER``); an SMS/email gateway registers itself here."""


def enqueue(*, recipient: User, subject: str, body: str) -> Notification:
    """Queue a message for ``recipient``; visible in the app immediately, delivered by the outbox worker."""
    notification = Notification(recipient_id=recipient.id, subject=subject[:200], body=body)
    db.session.add(notification)
    db.session.flush()
    return notification


def for_user(user: User, *, limit: int = 50) -> Sequence[Notification]:
    """The user's in-app notifications, newest first."""
    return db.session.scalars(sa.select(Notification).where(Notification.recipient_id == user.id)
                              .order_by(Notification.id.desc()).limit(limit)).all()


def unread_count(user: User) -> int:
    return db.session.scalar(sa.select(sa.func.count()).where(Notification.recipient_id == user.id,
                                                              Notification.read_at.is_(None))) or 0


def mark_all_read(user: User) -> None:
    db.session.execute(sa.update(Notification).where(Notification.recipient_id == user.id,
                                                     Notification.read_at.is_(None)).values(read_at=db.utcnow()))


def deliver_pending(sender: Sender | None = None, *, batch: int = 100) -> int:
    """Send queued messages; failures are retried up to :data:`MAX_ATTEMPTS`. Returns how many went out."""
    sender = sender or ConsoleSender()
    rows = db.session.scalars(sa.select(Notification).where(Notification.status == NotificationStatus.PENDING)
                              .order_by(Notification.id).limit(batch)).all()
    sent = 0
    for notification in rows:
        notification.attempts += 1
        try:
            sender.send(notification)
        except Exception as exc:  # noqa: BLE001 - one bad message must not block the outbox
            notification.last_error = type(exc).__name__[:300]
            if notification.attempts >= MAX_ATTEMPTS:
                notification.status = NotificationStatus.FAILED
        else:
            notification.status = NotificationStatus.SENT
            notification.sent_at = db.utcnow()
            sent += 1
    db.session.flush()
    return sent
