"""Flask extensions, created unbound and bound in :func:`app.create_app`."""

from __future__ import annotations

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.session_protection = "basic"
