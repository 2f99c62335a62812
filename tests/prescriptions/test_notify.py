"""The outbox: messages wait for the commit, go out through the configured sender, and failures are retried."""

from __future__ import annotations

import socket
import threading

from app import db
from app.notify import service as notify
from app.notify.models import Notification


class TinySmtp:
    """Just enough of an SMTP server on loopback to receive one message per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as rfile:
                conn.sendall(b"220 tiny ESMTP\r\n")
                while line := rfile.readline():
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250 tiny\r\n")
                    elif verb == b"DATA":
                        conn.sendall(b"354 go\r\n")
                        body = []
                        while (data := rfile.readline()) not in (b".\r\n", b""):
                            body.append(data.decode())
                        self.messages.append("".join(body))
                        conn.sendall(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break
                    else:
                        conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.sock.close()


def test_smtp_sender_delivers_and_marks_sent(app_ctx, factories):
    server = TinySmtp()
    try:
        user = factories.doctor()
        note = notify.enqueue(recipient=user, subject="Medicine ready", body="Collect it at the clinic.")
        db.session.commit()
        config = {"NOTIFY_SENDER": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": server.port,
                  "SMTP_FROM": "Town Health <no-reply@test.example>"}
        assert notify.deliver_pending(config) >= 1
        sent = db.session.get(Notification, note.id)
        assert sent.sent_at is not None and sent.attempts == 1
        [message] = [m for m in server.messages if "Medicine ready" in m]
        assert f"To: {user.email}" in message and "Collect it at the clinic." in message
    finally:
        server.close()


def test_failed_send_is_kept_for_retry(app_ctx, factories):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    user = factories.doctor()
    note = notify.enqueue(recipient=user, subject="Hello", body="Body")
    db.session.commit()
    notify.deliver_pending({"NOTIFY_SENDER": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": port,
                            "SMTP_FROM": "x@test.example"})
    row = db.session.get(Notification, note.id)
    assert row.sent_at is None and row.attempts == 1 and "ConnectionRefused" in row.last_error
