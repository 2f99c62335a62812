"""Form helpers shared by the HTML views: service errors land on the named fields."""

from __future__ import annotations

from collections.abc import Callable

from flask import flash
from flask_wtf import FlaskForm

from app import db
from app.errors import AppError


class AppForm(FlaskForm):
    def apply_error(self, exc: AppError) -> None:
        """Show a service's error on the fields it names, or as a form-level message."""
        placed = False
        for name, messages in (exc.errors or {}).items():
            field = getattr(self, name, None)
            if field is not None and hasattr(field, "errors"):
                field.errors = [*list(field.errors), *messages]
                placed = True
        if not placed:
            self.form_errors.append(exc.detail)


def commit_or_flash_error(action: Callable[[], object], success: str) -> bool:
    """Run a service call for a button on a page: commit and say ``success``, or roll back and say why not."""
    try:
        action()
    except AppError as exc:
        db.rollback()
        flash(exc.detail, "error")
        return False
    db.session.commit()
    flash(success, "success")
    return True
