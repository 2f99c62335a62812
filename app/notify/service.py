"""The notification outbox: :func:`enqueue` adds a message in the caller's transaction; :func:`deliver_pending`
sends queued messages outside requests (the ``worker`` service, or ``hospital send-notifications``).

A message is visible in the app at once but only sent after the change it announces is committed; a failed send
is retried up to :data:`MAX_ATTEMPTS` times. Senders are pluggable by name (``HOSPITAL_NOTIFY_SENDER``):
``log`` (default; ids only in the application log) or ``smtp``; an SMS gateway registers itself in :data:`SENDERS`.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from app import db
from app.auth.models import User
from app.notify.models import Notification, NotificationStatus

logger = logging.getLogger(__name__)

Sender = Callable[[Notification, Mapping[str, Any]], None]
MAX_ATTEMPTS = 5


def enqueue(*, recipient: User, subject: str, body: str) -> Notification:
    """Queue a message for ``recipient``; a rolled-back change therefore notifies nobody."""
    notification = Notification(recipient_id=recipient.id, subject=subject[:200], body=body)
    db.session.add(notification)
    db.session.flush()
    return notification


def for_user(user: User, *, limit: int = 50) -> Sequence[Notification]:
    """The user's in-app notifications, newest first."""
    return db.session.scalars(sa.select(Notification).where(Notification.recipient_id == user.id)
                              .order_by(Notification.id.desc()).limit(limit)).all()



def mark_all_read(user: User) -> None:
    db.session.execute(sa.update(Notification).where(Notification.recipient_id == user.id,
                                                     Notification.read_at.is_(None)).values(read_at=db.utcnow()))


def log_sender(notification: Notification, _config: Mapping[str, Any]) -> None:
    logger.info("notification %s to user %s via %s", notification.id, notification.recipient_id,
                notification.channel)


def smtp_sender(notification: Notification, config: Mapping[str, Any]) -> None:
    msg = EmailMessage()
    msg["From"] = config["SMTP_FROM"]
    msg["To"] = notification.recipient.email
    msg["Subject"] = notification.subject
    msg.set_content(notification.body)
    with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=20) as smtp:
        if config.get("SMTP_STARTTLS"):
            smtp.starttls()
        if config.get("SMTP_USER"):
            smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"])
        smtp.send_message(msg)


SENDERS: dict[str, Sender] = {"log": log_sender, "smtp": smtp_sender}


def deliver_pending(config: Mapping[str, Any] | None = None, *, sender: Sender | None = None,
                    limit: int = 100) -> int:
    """Send queued messages; returns how many went out. Rows are locked (skip-locked) so two workers never send
    the same message; the caller commits."""
    config = config or {}
    send = sender or SENDERS[config.get("NOTIFY_SENDER", "log")]
    query = (sa.select(Notification).where(Notification.status == NotificationStatus.PENDING)
             .order_by(Notification.id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Notification)
    sent = 0
    for notification in db.session.scalars(query).all():
        notification.attempts += 1
        try:
            send(notification, config)
        except Exception as exc:  # noqa: BLE001 - one bad message must not block the outbox; the row says why
            notification.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if notification.attempts >= MAX_ATTEMPTS:
                notification.status = NotificationStatus.FAILED
        else:
            notification.status = NotificationStatus.SENT
            notification.sent_at = db.utcnow()
            sent += 1
    db.session.flush()
    return sent
