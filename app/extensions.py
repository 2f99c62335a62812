"""Flask extensions, created unbound and bound in :func:`app.create_app`."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.session_protection = "basic"
# Request rate limits, counted in RATELIMIT_STORAGE_URI (Redis: shared by every worker and server).
limiter = Limiter(key_func=get_remote_address)
