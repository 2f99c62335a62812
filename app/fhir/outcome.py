"""FHIR errors: every failure under ``/fhir`` is an OperationOutcome, whatever raised it.

The app's error handlers build problem details (RFC 9457); :func:`render` turns the same facts into an
OperationOutcome, so a FHIR client never has to understand two error formats.
"""

from __future__ import annotations

from typing import Any

from flask import Response, json, request

from app.errors import AppError

FHIR_JSON = "application/fhir+json"

# HTTP status -> OperationOutcome.issue.code (http://hl7.org/fhir/issue-type)
ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
               415: "not-supported", 422: "processing", 429: "throttled"}


class FhirError(AppError):
    """A FHIR-specific refusal with an explicit issue code (e.g. ``not-supported`` for an unknown parameter)."""

    def __init__(self, detail: str, *, status: int = 400, code: str = "invalid", expression: list[str] | None = None,
                 **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.status = status
        self.slug = code
        self.title = detail
        self.extra = dict(self.extra, issue_code=code, expression=expression)


def outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}


def issue(severity: str, code: str, text: str, expression: list[str] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text, "details": {"text": text}}
    if expression:
        item["expression"] = expression
    return item


def render(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    """The problem-details ``body`` as an OperationOutcome: one issue for the error, one per named field."""
    extra_code = body.get("issue_code")
    code = extra_code or ISSUE_CODES.get(status, "exception" if status >= 500 else "invalid")
    text = body.get("detail") or body.get("title") or "Request failed"
    if status in (404, 405) and request.path.rstrip("/") == "/fhir" and request.method == "POST":
        status, code = 405, "not-supported"
        text = ("This server does not accept batch or transaction Bundles: send each resource to its own "
                "endpoint (see /fhir/metadata).")
    if body.get("title") and body.get("title") != text and status < 500:
        text = f"{body['title']}: {text}"
    issues = [issue("fatal" if status >= 500 else "error", code, text, body.get("expression"))]
    for field, messages in (body.get("errors") or {}).items():
        for message in messages:
            issues.append(issue("error", "invalid" if status == 422 or status == 400 else code,
                                f"{field}: {message}", [field]))
    for finding in body.get("findings") or []:
        issues.append(issue("error", "business-rule", str(finding.get("message", finding)), None))
    if body.get("possible_duplicate_id"):
        issues.append(issue("information", "duplicate", "The patient already registered is Patient/"
                            f"{body['possible_duplicate_id']}; update that record instead.", None))
    resp = Response(json.dumps(outcome(issues)), status=status, mimetype=FHIR_JSON)
    for key, value in headers.items():
        resp.headers[key] = value
    return resp
