"""The unit of work of a request: services flush, the request boundary commits, errors roll back.

- :func:`commit_at_request_end` registers the commit on a blueprint: when a view returns normally, what it left in
  the session is committed before the answer goes out (a failing commit becomes the error page, never a success).
  A view that raised was already rolled back by the error handlers (``app.errors``), keeping denial events.
- :func:`flash_outcome` runs a page button's service call and flashes what came of it; a refusal rolls back.
- :func:`submit` runs a form's service call; a refusal rolls back and is shown on the form's fields (or, for a
  page without fields, as the one line of a :class:`Refusal`).

Views still commit explicitly where durability demands it before more work (e.g. a report is signed before it is
written back into the study; imaging ingest commits each instance before answering the sender).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flask import Blueprint, Response, flash

from app import db
from app.errors import AppError


def _commit(response: Response) -> Response:
    db.session.commit()
    return response


def commit_at_request_end(bp: Blueprint) -> Blueprint:
    """Commit the unit of work of every request to ``bp`` whose view returned normally (once per blueprint, so
    a second app built in the same process finds it in place)."""
    if _commit not in bp.after_request_funcs.get(None, []):
        bp.after_request(_commit)
    return bp


class ShowsErrors(Protocol):
    def apply_error(self, exc: AppError) -> None: ...


def submit(form: ShowsErrors, action: Callable[[], object]) -> int | None:
    """Run a form's service call: None when done (the request boundary commits it); else roll back, put the
    refusal on the form's fields and return its HTTP status (the caller answers with the page again)."""
    try:
        action()
    except AppError as exc:
        db.rollback()
        form.apply_error(exc)
        return exc.status
    return None


def error_message(exc: AppError) -> str:
    """What a page says about a refused action: the field messages, else the error's detail."""
    return " ".join(m for msgs in (exc.errors or {}).values() for m in msgs) or exc.detail


class Refusal:
    """What a page without a form's fields says about a refused action: pass it to :func:`submit`, and show
    ``message`` (None while nothing was refused)."""

    message: str | None = None

    def apply_error(self, exc: AppError) -> None:
        self.message = error_message(exc)


def flash_outcome(action: Callable[[], object], success: str | Callable[[], str]) -> bool:
    """Run a page button's service call: flash ``success`` (or what it returns, computed after the action), or
    roll back and flash why not (the HTML twin of the problem+json handler). True when it was done."""
    try:
        action()
    except AppError as exc:
        db.rollback()
        flash(error_message(exc), "error")
        return False
    flash(success if isinstance(success, str) else success(), "success")
    return True
