"""The notification outbox: rows written in the same transaction as the change they announce."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, UtcTimestamp


class Notification(Base):
    __tablename__ = "notification"

    id: so.Mapped[IntPk]
    recipient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    subject: so.Mapped[str] = so.mapped_column(sa.String(200))
    body: so.Mapped[str] = so.mapped_column(sa.Text)
    created_at: so.Mapped[UtcTimestamp]
    sent_at: so.Mapped[datetime | None] = so.mapped_column(index=True)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.String(300))

    recipient: so.Mapped[User] = so.relationship(lazy="joined")
