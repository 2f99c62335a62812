"""Outbox worker: ``python -m app.notify`` delivers queued notifications every few seconds."""

from __future__ import annotations

import logging
import time

from app import create_app, db
from app.notify import service

logging.basicConfig(level=logging.INFO, format="%(asctime)s notify %(levelname)s %(message)s")
app = create_app()
sender = service.SENDERS[app.config["NOTIFY_SENDER"]]()
while True:
    with app.app_context():
        service.deliver_pending(sender)
        db.session.commit()
    time.sleep(5)
