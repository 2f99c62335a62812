"""Where the current action comes from (client address), set once per request or job.

A context variable rather than Flask's ``request`` so services stay usable from the CLI, the DICOM
listener and tests, where there is no request.
"""

from __future__ import annotations

from contextvars import ContextVar

client_ip: ContextVar[str | None] = ContextVar("client_ip", default=None)
