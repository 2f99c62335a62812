"""The notification outbox: :func:`enqueue` adds a message in the caller's transaction; :func:`deliver_pending`
sends queued messages outside requests (the ``worker`` service, or ``hospital send-notifications``).

A message is visible in the app at once but only sent after the change it announces is committed; a failed send
is retried up to :data:`MAX_ATTEMPTS` times. Senders are pluggable by name: email (``HOSPITAL_NOTIFY_SENDER``)
``log`` (default; ids only in the application log) or ``smtp``; text messages (``HOSPITAL_SMS_SENDER``) ``log`` or
``http`` (a gateway: a JSON POST to ``HOSPITAL_SMS_GATEWAY_URL`` with ``HOSPITAL_SMS_GATEWAY_KEY`` as bearer).
Text is written in the recipient's language (their own setting, else their facility's default) when the
message is queued: pass a :class:`Message` (or a plain catalogue string).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import requests
import sqlalchemy as sa
from flask_babel import force_locale, gettext

from app import db
from app.auth.models import User
from app.i18n import locale_of
from app.notify.models import Notification, NotificationStatus

logger = logging.getLogger(__name__)

Sender = Callable[[Notification, Mapping[str, Any]], None]
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Message:
    """A catalogue text and its values, written out in the recipient's language when it is queued. Values that are
    themselves a :class:`Message` are written out in the same language."""

    text: str
    values: dict[str, Any] = field(default_factory=dict)

    def __init__(self, text: str, **values: Any) -> None:
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "values", values)

    def render(self) -> str:
        values = {k: render(v) if isinstance(v, Message) else v for k, v in self.values.items()}
        return gettext(self.text, **values)


def render(text: Message | str) -> str:
    """The text in the current language (a plain string is looked up in the catalogue as it is)."""
    return text.render() if isinstance(text, Message) else gettext(text)


SMS = "sms"


def enqueue(*, recipient: User, subject: Message | str, body: Message | str, channel: str = "email",
            address: str | None = None) -> Notification:
    """Queue a message for ``recipient`` in their language; a rolled-back change therefore notifies nobody. An
    ``sms`` goes to ``address`` (a phone number) and is a copy: the app lists the email one."""
    with force_locale(locale_of(recipient)):
        subject, body = render(subject), render(body)
    notification = Notification(recipient_id=recipient.id, subject=subject[:200], body=body, channel=channel,
                                address=address)
    db.session.add(notification)
    db.session.flush()
    return notification


def for_user(user: User, *, limit: int = 50) -> Sequence[Notification]:
    """The user's in-app notifications, newest first."""
    return db.session.scalars(sa.select(Notification).where(Notification.recipient_id == user.id,
                                                            Notification.channel != SMS)
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


class GatewayError(RuntimeError):
    """The SMS gateway did not accept the message (the outbox retries it)."""


def http_sms_sender(notification: Notification, config: Mapping[str, Any]) -> None:
    """POST ``{"to", "text", "reference"}`` as JSON to the gateway with its key as bearer token; any 2xx is sent."""
    if not notification.address:
        raise GatewayError("no phone number")
    resp = requests.post(config["SMS_GATEWAY_URL"], timeout=20, json={
        "to": notification.address, "text": notification.body, "reference": f"notification-{notification.id}"},
        headers={"Authorization": f"Bearer {config['SMS_GATEWAY_KEY']}"})
    if not 200 <= resp.status_code < 300:
        raise GatewayError(f"gateway answered {resp.status_code}")


SENDERS: dict[str, Sender] = {"log": log_sender, "smtp": smtp_sender}
SMS_SENDERS: dict[str, Sender] = {"log": log_sender, "http": http_sms_sender}


def sender_for(notification: Notification, config: Mapping[str, Any]) -> Sender:
    """The configured sender of the notification's channel."""
    if notification.channel == SMS:
        return SMS_SENDERS[config.get("SMS_SENDER", "log")]
    return SENDERS[config.get("NOTIFY_SENDER", "log")]


def deliver_pending(config: Mapping[str, Any] | None = None, *, sender: Sender | None = None,
                    limit: int = 100) -> int:
    """Send queued messages; returns how many went out. Rows are locked (skip-locked) so two workers never send
    the same message; the caller commits."""
    config = config or {}
    query = (sa.select(Notification).where(Notification.status == NotificationStatus.PENDING)
             .order_by(Notification.id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Notification)
    sent = 0
    for notification in db.session.scalars(query).all():
        notification.attempts += 1
        try:
            (sender or sender_for(notification, config))(notification, config)
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
