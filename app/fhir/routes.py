"""HTTP face of the FHIR server under ``/fhir``: one route per registered interaction, the CapabilityStatement,
and ``Patient/$everything``. Handlers stay thin: parse, call the registry (domain services), answer (the request
boundary commits)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, json, request
from flask_login import current_user

from app import db
from app.auth import bearer
from app.auth.models import User
from app.errors import Unauthorized, register_renderer
from app.fhir import outcome
from app.fhir import search as fs
from app.fhir.outcome import FHIR_JSON, FhirError
from app.transactions import commit_at_request_end

bp = commit_at_request_end(Blueprint("fhir", __name__, url_prefix="/fhir"))
MAX_BODY = 256 * 1024
ACCEPTED_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
SOFTWARE = "Town Health"


def respond(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype=FHIR_JSON)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def actor() -> User:
    """The signed-in person or the bearer token's user; FHIR needs one for everything but metadata."""
    if not current_user.is_authenticated:
        raise Unauthorized("Send an access token (Authorization: Bearer ...) or sign in.",
                           headers={"WWW-Authenticate": 'Bearer realm="hospital"'})
    return current_user._get_current_object()  # type: ignore[no-any-return]


def body_of(resource: fs.ResourceType) -> dict[str, Any]:
    """The request's resource: JSON of the right type and size, or an OperationOutcome saying what is wrong."""
    if (request.content_length or 0) > MAX_BODY:
        raise FhirError(f"The resource is larger than {MAX_BODY // 1024} KiB; this server does not accept it.",
                        status=413, code="too-costly")
    if request.mimetype not in ACCEPTED_TYPES:
        raise FhirError("Send the resource as application/fhir+json.", status=415, code="not-supported")
    data = request.stream.read(MAX_BODY + 1)  # a body without a length is read no further than the limit
    if len(data) > MAX_BODY:
        raise FhirError(f"The resource is larger than {MAX_BODY // 1024} KiB; this server does not accept it.",
                        status=413, code="too-costly")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise FhirError("The body is not valid JSON.", code="structure") from None
    if not isinstance(body, dict) or body.get("resourceType") != resource.name:
        raise FhirError(f"Expected a {resource.name} resource (resourceType '{resource.name}').",
                        code="structure", expression=["resourceType"])
    return body


@bp.before_request
def _json_only() -> None:
    """This server speaks JSON only: asking for XML gets a clear 406 rather than JSON it did not ask for."""
    wanted = request.args.get("_format", "")
    if (wanted and "json" not in wanted) or (
            request.headers.get("Accept") and request.accept_mimetypes.best_match(ACCEPTED_TYPES) is None):
        raise FhirError("This server answers in JSON only (application/fhir+json).", status=406,
                        code="not-supported", expression=["_format"] if wanted else None)


# ---------------------------------------------------------------- interactions


def _search(name: str) -> Any:
    def view() -> Response:
        by = actor()
        resource = fs.REGISTRY[name]
        search = fs.parse(resource, request.args)
        rows, total = fs.run(search, by)
        extra = fs.includes(search, rows, by)
        body = fs.bundle(search, rows, total, extra)
        return respond(body)

    return view


def _read(name: str) -> Any:
    def view(rid: str) -> Response:
        by = actor()
        resource = fs.REGISTRY[name]
        obj = resource.read(rid, by)
        body = resource.to_fhir(obj)
        return respond(body)

    return view


def _create(name: str) -> Any:
    def view() -> Response:
        by = actor()
        resource = fs.REGISTRY[name]
        assert resource.create is not None
        obj = resource.create(body_of(resource), by)
        db.session.flush()
        body = resource.to_fhir(obj)
        return respond(body, 201, {"Location": f"{fs.base_url()}/{name}/{body['id']}"})

    return view


def _update(name: str) -> Any:
    def view(rid: str) -> Response:
        by = actor()
        resource = fs.REGISTRY[name]
        assert resource.update is not None
        data = body_of(resource)
        if str(data.get("id", "")) != rid:
            raise FhirError(f"The resource's id must be {rid}, the id in the URL.", code="invalid",
                            expression=["id"])
        obj = resource.read(rid, by)
        resource.update(obj, data, by)
        db.session.flush()
        body = resource.to_fhir(obj)
        return respond(body)

    return view


@bp.get("/Patient/<rid>/$everything")
@bearer.scope("Patient")
def everything(rid: str) -> Response:
    """The patient and everything in their compartment the caller may see (and the token's scopes allow)."""
    by = actor()
    patient_type = fs.REGISTRY["Patient"]
    patient = patient_type.read(rid, by)
    entries = [fs.entry("Patient", patient, "match")]
    for name, resource in fs.REGISTRY.items():
        param = resource.param("patient")
        if name == "Patient" or param is None or not fs.token_allows(name, "s"):
            continue
        visible = fs.confine(resource, resource.visible(by))
        rows = list(db.session.scalars(param.apply(visible, [f"Patient/{patient.id}"], None)
                                       .order_by(resource.model.id).limit(fs.MAX_INCLUDED)).unique())  # type: ignore
        fs.audit_found(resource, rows, by, "everything")
        entries += [fs.entry(name, row, "match") for row in rows]
    body = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
            "link": [{"relation": "self", "url": f"{fs.base_url()}/Patient/{patient.id}/$everything"}],
            "entry": entries}
    return respond(body)


def interactions(resource: fs.ResourceType) -> list[str]:
    return ["read", "search-type"] + (["create"] if resource.create else []) + (["update"] if resource.update else [])


def _add_routes(resource: fs.ResourceType) -> None:
    name = resource.name
    scoped, search = bearer.scope(name), bearer.scope(name, collection=True)
    bp.add_url_rule(f"/{name}", f"search_{name}", search(_search(name)), methods=["GET"])
    bp.add_url_rule(f"/{name}/<rid>", f"read_{name}", scoped(_read(name)), methods=["GET"])
    if resource.create:
        bp.add_url_rule(f"/{name}", f"create_{name}", scoped(_create(name)), methods=["POST"])
    if resource.update:
        bp.add_url_rule(f"/{name}/<rid>", f"update_{name}", scoped(_update(name)), methods=["PUT"])


# ---------------------------------------------------------------- CapabilityStatement


@bp.get("/metadata")
@bearer.public
def metadata() -> Response:
    """What this server does, derived from the registry (the same one the routes come from)."""
    return respond(capability_statement())


def capability_statement() -> dict[str, Any]:
    root = fs.base_url().removesuffix("/fhir")
    resources = []
    for name, resource in sorted(fs.REGISTRY.items()):
        item: dict[str, Any] = {
            "type": name,
            "interaction": [{"code": code} for code in interactions(resource)],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchInclude": [f"{name}:{inc}" for inc in sorted(resource.includes)],
            "searchRevInclude": sorted(f"{other.name}:{p.name}" for other in fs.REGISTRY.values()
                                       for p in other.params.values() if name in p.target),
            "searchParam": [{"name": p.name, "type": p.type, "documentation": p.doc}
                            for p in resource.params.values()],
        }
        if resource.profile:
            item["profile"] = resource.profile
        if resource.documentation:
            item["documentation"] = resource.documentation
        if name == "Patient":
            item["operation"] = [{"name": "everything",
                                  "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
        resources.append(fs.compact(item))
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": current_app.config.get("FHIR_CAPABILITY_DATE", "2026-12-04"),
        "kind": "instance",
        "software": {"name": SOFTWARE},
        "implementation": {"description": "Town Health FHIR R4 server", "url": fs.base_url()},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                               "extension": [{"url": name, "valueUri": f"{root}/oauth/{path}"} for name, path in (
                                   ("authorize", "authorize"), ("token", "token"), ("revoke", "revoke"),
                                   ("introspect", "introspect"))]}],
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "description": "OAuth2 bearer tokens with SMART scopes (v1 patient/*.read and v2 "
                               "patient/Patient.rs); a signed-in browser session works too.",
            },
            "resource": resources,
            "operation": [{"name": "everything",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}],
        }],
    }


for _resource in fs.REGISTRY.values():
    _add_routes(_resource)


def init_app(app: Flask) -> None:
    """Serve /fhir, with errors under it written as OperationOutcome, and the demo SMART app."""
    from app.fhir import demo_app

    register_renderer("/fhir", outcome.render)
    app.register_blueprint(bp)
    app.register_blueprint(demo_app.bp)
