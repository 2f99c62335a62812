"""View guards. Services enforce the rules; these only turn away the wrong role early, with an audit row."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import request
from flask_login import current_user, login_required

from app.audit import service as audit
from app.auth.models import Role
from app.errors import Forbidden

F = TypeVar("F", bound=Callable[..., Any])


def roles_required(*roles: Role) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current_user.role not in roles:
                audit.forbid(f"view.{request.endpoint}", by=current_user,
                             error=Forbidden("Your role does not give access to this page."))
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
