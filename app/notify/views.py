"""In-app notifications page."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from app.notify import service
from app.transactions import commit_at_request_end

bp = commit_at_request_end(Blueprint("notify", __name__, template_folder="templates"))



@bp.get("/notifications")
@login_required
def inbox() -> str:
    """The user's messages (confirmations, reminders); opening the page marks them read."""
    items = service.for_user(current_user)
    unread = {n.id for n in items if n.read_at is None}
    service.mark_all_read(current_user)
    return render_template("notify/inbox.html", items=items, unread=unread)
