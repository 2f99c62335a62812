"""Form helpers shared by the HTML views: service errors land on the named fields."""

from __future__ import annotations

from flask_wtf import FlaskForm

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
