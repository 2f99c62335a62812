"""The JSON API's shared layer: the body rules every write goes through, ids bounded to the database's range,
and an OpenAPI document that names every problem response an operation can give.

Handlers never parse bodies: flask-smorest's ``@blp.arguments`` loads the JSON this module has already checked,
so a body that is not UTF-8, not JSON, or of the wrong top-level type is a 400 naming the problem, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from apispec import BasePlugin
from flask import Flask, current_app, request
from flask_babel import gettext
from flask_smorest import Api
from werkzeug.routing import IntegerConverter
from werkzeug.wrappers import Response as BaseResponse

from app.auth import bearer
from app.catalogue import N_
from app.errors import PROBLEM_JSON, AppError, PayloadTooLarge, UnsupportedMediaType

API_MAX_BODY = 256 * 1024
DB_ID_MAX = 2**31 - 1
"""The largest id an INTEGER key holds on PostgreSQL (SQLite's are wider; no id there gets this far)."""


class MalformedBody(AppError):
    status, slug, title = 400, "malformed-body", N_("The request body could not be read")


def digits_up_to(limit: int) -> str:
    """A regex for the decimal numbers from 0 to ``limit``, so the router never matches a larger one."""
    text = str(limit)
    options = [rf"\d{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for i, digit in enumerate(text):
        if digit != "0":
            rest = len(text) - i - 1
            options.append(f"{text[:i]}[0-{int(digit) - 1}]" + (rf"\d{{{rest}}}" if rest else ""))
    options.append(text)
    return "(?:" + "|".join(options) + ")"


class DatabaseId(IntegerConverter):
    """``<int:...>`` in every route: a non-negative id the database can hold, so a 30-digit id is a plain
    404 instead of an overflow deep in the driver. The bound is in the regex: a value refused only after
    matching would let the router answer 405 for a path another method's rule also fails to match."""

    regex = digits_up_to(DB_ID_MAX)

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002 - werkzeug's signature
        kwargs.setdefault("max", DB_ID_MAX)
        super().__init__(map, *args, **kwargs)


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, as every error on the API is answered."""

    type = ma.fields.String(required=True, metadata={"example": "/problems/validation-failed"})
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(required=True)
    instance = ma.fields.String(required=True)
    errors = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()),
                            metadata={"description": "Messages per field, for a field that needs attention"})

    class Meta:
        unknown = ma.INCLUDE


PROBLEM_REASONS = {
    400: "The body or a parameter could not be read",
    401: "Sign in first (a session cookie or a bearer token)",
    403: "Signed in, but this action is not for your role or token scope",
    404: "No such record, or one you may not see",
    405: "Method not allowed on this path",
    409: "Conflicts with the record's current state",
    413: "The body is larger than allowed",
    415: "The body is not application/json",
    422: "Some fields need attention (named under `errors`)",
    429: "Too many attempts; try again later",
    502: "The media service did not answer",
}
"""Every problem status the API answers with, and when."""

READ_PROBLEMS = (400, 401, 403, 404, 422, 429)
WRITE_PROBLEMS = (*READ_PROBLEMS, 409, 413, 415)


class ProblemResponses(BasePlugin):
    """Describe the problem responses on every operation: reads can be refused, missing or badly asked;
    writes can also conflict, be too large or not JSON. Operations that reach the media service add 502."""

    def __init__(self, extra: Callable[[str, str], tuple[int, ...]]) -> None:
        super().__init__()
        self.extra_codes = extra

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            responses = operation.setdefault("responses", {})
            responses.pop("default", None)
            codes = WRITE_PROBLEMS if method.upper() in ("POST", "PUT", "PATCH", "DELETE") else READ_PROBLEMS
            for status in (*codes, *self.extra_codes(path or "", method)):
                responses.setdefault(str(status), {
                    "description": PROBLEM_REASONS[status],
                    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                })


MEDIA_PATH_SUFFIXES = ("/join", "/relay", "/relay/switch", "/echo/offer", "/recording", "/recording/start")


def _media_problems(path: str, _method: str) -> tuple[int, ...]:
    return (502,) if path.endswith(MEDIA_PATH_SUFFIXES) else ()


class HospitalApi(Api):
    """flask-smorest's Api with problem+json as the documented error body."""

    DEFAULT_ERROR_RESPONSE_NAME = None
    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        self.spec.components.schema("Problem", schema=ProblemSchema)


def make_api(app: Flask) -> Api:
    """Install the id converter (before any route exists), the body rules, and the documented Api."""
    app.url_map.converters["int"] = DatabaseId
    app.before_request(_check_body)
    bearer.declare("api-docs", bearer.WILDCARD)  # the OpenAPI document: a token sent for it needs a ``*`` scope
    return HospitalApi(app, spec_kwargs={
        "info": {"description": "JSON API of the Internet hospital. Errors are RFC 9457 problem details."},
        "extra_plugins": [ProblemResponses(_media_problems)],
    })


def _expected_body(endpoint: str, method: str) -> ma.Schema | None:
    """The JSON body schema the view declares with ``@blp.arguments`` (None: it takes no body)."""
    view = current_app.view_functions.get(endpoint)
    view_class = getattr(view, "view_class", None)
    func = getattr(view_class, method.lower(), None) if view_class else view
    for param in getattr(func, "_apidoc", {}).get("arguments", {}).get("parameters", []):
        if param.get("in") == "json":
            schema = param["schema"]
            return schema() if isinstance(schema, type) else schema
    return None


def _check_body() -> BaseResponse | None:
    """API writes: small, JSON, UTF-8, and the top-level type the operation takes; each failure says which."""
    if not request.path.startswith("/api/") or request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if (request.content_length or 0) > API_MAX_BODY:
        raise PayloadTooLarge(gettext("Request bodies on the API are limited to %(size)s KiB.",
                                      size=API_MAX_BODY // 1024))
    if request.content_length and not request.is_json:
        raise UnsupportedMediaType("Send the body as application/json.")
    raw = request.get_data(cache=True) if request.is_json else b""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(gettext("The body is not valid UTF-8 (byte %(byte)d).", byte=exc.start)) from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedBody(gettext("The body is not valid JSON: %(problem)s at line %(line)d, column %(column)d.",
                                    problem=exc.msg, line=exc.lineno, column=exc.colno)) from None
    except RecursionError:
        raise MalformedBody("The body is nested too deeply.") from None
    schema = _expected_body(request.endpoint or "", request.method)
    if schema is None:
        return None
    wanted, name = (list, N_("array")) if schema.many else (dict, N_("object"))
    if not isinstance(body, wanted):
        raise MalformedBody(gettext("The body must be a JSON %(wanted)s, not %(given)s.", wanted=gettext(name),
                                     given=gettext(_json_kind(body))))
    return None


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words marked for the catalogue (``null`` is the same in every language)."""
    return {dict: N_("an object"), list: N_("an array"), str: N_("a string"), bool: N_("true or false"),
            type(None): "null"}.get(type(value), N_("a number"))
