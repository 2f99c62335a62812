"""HTTP helpers for tests that drive the live server with `requests`, as an outside client would."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import PASSWORD


def signed_in(base: str, user: Any) -> requests.Session:
    """A `requests` session signed in through the real form, sending the CSRF header on unsafe requests."""
    s = requests.Session()
    token = s.get(f"{base}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    resp = s.post(f"{base}/sign-in", data={"email": user.email, "password": PASSWORD, "csrf_token": token},
                  allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    s.headers["X-CSRFToken"] = s.get(f"{base}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    return s
