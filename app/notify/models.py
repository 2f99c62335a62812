from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, UtcTimestamp, str_enum


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Notification(Base):
    """One message to one user: shown in the app at once, delivered outward by the configured sender."""

    __tablename__ = "notification"

    id: so.Mapped[IntPk]
    recipient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    channel: so.Mapped[str] = so.mapped_column(sa.String(16), default="email")
    """"email" (also shown in the app) or "sms" (a copy sent to ``address``, not listed in the app)."""
    address: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    """Where an SMS goes (the phone number at the time it was queued); email goes to the account's address."""
    subject: so.Mapped[str] = so.mapped_column(sa.String(200))
    body: so.Mapped[str] = so.mapped_column(sa.Text)
    status: so.Mapped[NotificationStatus] = so.mapped_column(
        str_enum(NotificationStatus, 16), default=NotificationStatus.PENDING, index=True)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[UtcTimestamp]
    sent_at: so.Mapped[datetime | None]
    read_at: so.Mapped[datetime | None]
    last_error: so.Mapped[str | None] = so.mapped_column(sa.String(300))

    recipient: so.Mapped[User] = so.relationship()
