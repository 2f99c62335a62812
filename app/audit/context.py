"""Where the current action comes from (client address), set once per request or job.

A context variable rather than Flask's ``request`` so services stay usable from the CLI, the DICOM
listener and tests, where there is no request.
"""

from __future__ import annotations

from contextvars import ContextVar

client_ip: ContextVar[str | None] = ContextVar("client_ip", default=None)

on_behalf_of: ContextVar[int | None] = ContextVar("on_behalf_of", default=None)
"""The patient the signed-in caregiver is acting for in this request (set after the link is re-checked), or
None. Every audit event written meanwhile records it; :mod:`app.patients.access` reads it to grant proxy rights."""
