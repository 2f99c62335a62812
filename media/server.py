"""HTTP entry point of the media service (internal API, loopback by default)."""

from __future__ import annotations

import argparse
import hmac
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

logger = logging.getLogger("media")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def shared_secret() -> str:
    return os.environ.get("HOSPITAL_MEDIA_SECRET") or os.environ.get("SECRET_KEY") or "dev-only-secret-change-me"


@web.middleware
async def require_secret(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but /health needs ``Authorization: Bearer <shared secret>``."""
    if request.path != "/health":
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(supplied.encode(), request.app["secret"].encode()):
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401,
                                     content_type="application/problem+json")
    return await handler(request)


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(secret: str | None = None) -> web.Application:
    app = web.Application(middlewares=[require_secret], client_max_size=256 * 1024)
    app["secret"] = secret or shared_secret()
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="media", description="Town Health media service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s media %(levelname)s %(message)s")
    web.run_app(create_app(), host=args.host, port=args.port, print=None)
