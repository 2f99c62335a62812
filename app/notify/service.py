"""Outbox: :func:`enqueue` adds a message in the caller's transaction; :func:`deliver_pending` sends them.

A message is only sent after the change it announces is committed, and a failed send is retried later.
The sender is pluggable: ``log`` (default; writes to the application log) or ``smtp``.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from app import db
from app.auth.models import User
from app.notify.models import Notification

logger = logging.getLogger(__name__)

Sender = Callable[[Notification, dict[str, Any]], None]
MAX_ATTEMPTS = 5


def enqueue(*, recipient: User, subject: str, body: str) -> Notification:
    """Queue a message to ``recipient``; it goes out with the next :func:`deliver_pending`."""
    note = Notification(recipient_id=recipient.id, subject=subject[:200], body=body)
    db.session.add(note)
    db.session.flush()
    return note


def for_user(user: User, *, limit: int = 20) -> list[Notification]:
    return list(db.session.scalars(sa.select(Notification).where(Notification.recipient_id == user.id)
                                   .order_by(Notification.id.desc()).limit(limit)))


def log_sender(note: Notification, _config: dict[str, Any]) -> None:
    logger.info("notification %s to user %s: %s", note.id, note.recipient_id, note.subject)


def smtp_sender(note: Notification, config: dict[str, Any]) -> None:
    msg = EmailMessage()
    msg["From"] = config["SMTP_FROM"]
    msg["To"] = note.recipient.email
    msg["Subject"] = note.subject
    msg.set_content(note.body)
    with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=20) as smtp:
        if config.get("SMTP_STARTTLS"):
            smtp.starttls()
        if config.get("SMTP_USER"):
            smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"])
        smtp.send_message(msg)


SENDERS: dict[str, Sender] = {"log": log_sender, "smtp": smtp_sender}


def deliver_pending(config: dict[str, Any], *, limit: int = 100) -> int:
    """Send queued messages with the configured sender; returns how many went out. Commits per message."""
    sender = SENDERS[config.get("NOTIFY_SENDER", "log")]
    rows = list(db.session.scalars(
        sa.select(Notification).where(Notification.sent_at.is_(None), Notification.attempts < MAX_ATTEMPTS)
        .order_by(Notification.id).limit(limit).with_for_update(skip_locked=True, of=Notification)))
    sent = 0
    for note in rows:
        note.attempts += 1
        try:
            sender(note, config)
        except Exception as exc:  # noqa: BLE001 - keep going; the row records why and is retried
            note.last_error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            note.sent_at = db.utcnow()
            sent += 1
    db.session.commit()
    return sent
