"""SMART-on-FHIR-style scopes: parse them, describe them to people, and decide what a request needs.

A resource scope reads ``<context>/<Resource|*>.<permissions>`` where the context is ``patient`` (only the
signed-in patient's own record), ``user`` (whatever the person may see) or ``system`` (a machine client),
and the permissions are a subset of ``cruds`` in that order (create, read, update, delete, search).
SMART v1 suffixes ``read`` (= ``rs``), ``write`` (= ``cud``) and ``*`` (= ``cruds``) are accepted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from babel.lists import format_list
from flask_babel import get_locale, gettext

from app.catalogue import N_

IDENTITY_SCOPES = {
    "openid": N_("Confirm who you are"),
    "profile": N_("See your name"),
    "email": N_("See your email address"),
    "fhirUser": N_("Know whether you are a patient or a practitioner, and which one"),
    "offline_access": N_("Keep access after you close the app, until you revoke it"),
}

LAUNCH_SCOPES = {
    "launch/patient": N_("Work on one patient's record: yours, or (staff) the patient you choose next"),
    "launch/encounter": N_("Know which consult you are working on"),
    "launch": N_("Open from inside Town Health with the record you are looking at"),
}
"""SMART launch context requests: they grant no data by themselves."""

RESOURCE_TYPES = {
    "Patient": N_("your patient record (demographics, allergies, conditions, medicines)"),
    "Practitioner": N_("practitioner profiles"),
    "MedicationRequest": N_("prescriptions"),
    "MedicationDispense": N_("pharmacy dispensing"),
    "Medication": N_("the formulary (drugs, strengths and forms)"),
    "ImagingStudy": N_("scans and images"),
    "Appointment": N_("appointments and consults"),
    "Encounter": N_("consult notes"),
    "AuditEvent": N_("the audit trail"),
    "AllergyIntolerance": N_("allergies"),
    "Condition": N_("conditions"),
    "MedicationStatement": N_("current medicines"),
    "Observation": N_("observations"),
    "DocumentReference": N_("documents"),
    "PractitionerRole": N_("staff roles and where staff work"),
    "Organization": N_("the hospital and clinics"),
    "Location": N_("clinic and pharmacy locations"),
    "Schedule": N_("doctors' consult hours"),
    "Slot": N_("free consult times"),
    "Endpoint": N_("where scans are served (DICOMweb)"),
    "Consent": N_("consents to record consults"),
    "Communication": N_("the notifications sent to you"),
    "Provenance": N_("who changed records and when"),
    "ServiceRequest": N_("requests to read scans"),
    "DiagnosticReport": N_("scan reports"),
    "RelatedPerson": N_("your caregivers (family members who act for you)"),
}

SCOPE_RE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]{1,40}|\*)\.(c?r?u?d?s?|read|write|\*)$")
PERMISSION_WORDS = {"c": N_("create"), "r": N_("read"), "u": N_("update"), "d": N_("delete"),
                    "s": N_("search")}

@dataclass(frozen=True)
class ResourceScope:
    context: str
    resource: str
    permissions: frozenset[str]

    def allows(self, resource: str, permission: str) -> bool:
        return (self.resource in ("*", resource)) and permission in self.permissions


def parse(scope: str) -> ResourceScope | None:
    """A resource scope, or None for anything else (identity scopes, unknown text)."""
    match = SCOPE_RE.match(scope)
    if not match:
        return None
    context, resource, perms = match.groups()
    if resource != "*" and resource not in RESOURCE_TYPES:
        return None
    letters = {"read": "rs", "write": "cud", "*": "cruds"}.get(perms, perms)
    if not letters:
        return None
    return ResourceScope(context, resource, frozenset(letters))


def covers(allowed: list[str], scope: str) -> bool:
    """Whether ``scope`` is within one of ``allowed`` (same context, same or wildcard resource, fewer rights)."""
    if scope in allowed:
        return True
    wanted = parse(scope)
    if wanted is None:
        return False
    for text in allowed:
        have = parse(text)
        if (have is not None and have.context == wanted.context and have.resource in ("*", wanted.resource)
                and wanted.permissions <= have.permissions):
            return True
    return False


def is_known(scope: str) -> bool:
    return scope in IDENTITY_SCOPES or scope in LAUNCH_SCOPES or parse(scope) is not None


def all_covered(allowed: list[str], wanted: list[str]) -> bool:
    """Whether every scope in ``wanted`` means no more than ``allowed`` does (narrowing on refresh)."""
    return all(covers(allowed, scope) for scope in wanted)


WHOSE = {
    "patient": N_("%(verbs)s %(what)s in your own record only"),
    "user": N_("%(verbs)s %(what)s that you can see in the hospital"),
    "system": N_("%(verbs)s %(what)s as a machine client"),
}
"""One sentence per context, so that each language puts the verbs, the data and whose it is in its own order."""


def describe(scope: str) -> str:
    """A sentence a patient or clinician can read on the consent screen, in their language."""
    if scope in IDENTITY_SCOPES:
        return gettext(IDENTITY_SCOPES[scope])
    if scope in LAUNCH_SCOPES:
        return gettext(LAUNCH_SCOPES[scope])
    parsed = parse(scope)
    if parsed is None:
        return scope
    what = gettext("all data") if parsed.resource == "*" else gettext(RESOURCE_TYPES.get(parsed.resource,
                                                                                         parsed.resource))
    verbs = [gettext(PERMISSION_WORDS[p]) for p in "cruds" if p in parsed.permissions]
    listed = format_list(verbs, style="unit", locale="en") if _english() else format_list(verbs, locale=get_locale())
    return gettext(WHOSE[parsed.context], verbs=listed[:1].upper() + listed[1:], what=what)


def _english() -> bool:
    """English keeps the plain comma list ("Read, search"); other languages use their own list pattern."""
    locale = get_locale()
    return locale is None or locale.language == "en"


# DICOMweb searches (QIDO-RS) end in a collection: /studies, /series, /instances, also below a study or series.
DICOMWEB_SEARCH = re.compile(r"^/dicomweb(/studies/[^/]+(/series/[^/]+)?)?/(studies|series|instances)/?$")


def required_permission(method: str, path: str, prefix: str) -> str:
    """GET on a collection is a search, GET below it a read; POST creates, PUT/PATCH update, DELETE deletes."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        rest = path[len(prefix):].strip("/")
        return "s" if not rest or DICOMWEB_SEARCH.match(path) else "r"
    return {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "u")


def grants(scopes: list[str], resource: str | None, permission: str) -> bool:
    """Whether any of ``scopes`` allows ``permission`` on ``resource`` (None: any valid token will do)."""
    if resource is None:
        return True
    for text in scopes:
        parsed = parse(text)
        if parsed is not None and (parsed.resource == "*" or parsed.resource == resource) and \
                permission in parsed.permissions:
            return True
    return False


def needed_scope(resource: str | None, permission: str, context: str = "user") -> str:
    return f"{context}/{resource or '*'}.{permission}"
