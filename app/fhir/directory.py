"""Practitioner and PractitionerRole (staff accounts), Organization and Location (facilities).

A directory, not patient data: any signed-in user or token may read it (apps show who prescribed and where to
collect medicine), and reads are not audited. Staff contact details other than the name are not published.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app import db
from app.auth.models import Role, User
from app.errors import NotFound
from app.facilities.models import Facility, FacilityKind
from app.fhir import search as fs
from app.fhir.patients import coded, record_id
from app.fhir.search import ResourceType, SearchParam

STAFF = (Role.DOCTOR, Role.CLINIC_STAFF, Role.PHARMACIST, Role.ADMIN)
FACILITY_SYSTEM = "urn:town-health:facility"
ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/practitioner-role"
ROLE_CODES = {Role.DOCTOR: ("doctor", "Doctor"), Role.CLINIC_STAFF: ("nurse", "Nurse"),
              Role.PHARMACIST: ("pharmacist", "Pharmacist"), Role.ADMIN: ("ict", "ICT professional")}


def _name(full_name: str) -> dict[str, Any]:
    parts = full_name.replace("Dr. ", "").replace("Dr ", "").split()
    return fs.compact({"use": "official", "text": full_name, "family": parts[-1] if parts else None,
                       "given": parts[:-1]})


def practitioner_to_fhir(u: User) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": str(u.id), "active": u.active, "name": [_name(u.full_name)]}


def role_to_fhir(u: User) -> dict[str, Any]:
    code, display = ROLE_CODES[u.role]
    return fs.compact({
        "resourceType": "PractitionerRole",
        "id": str(u.id),
        "active": u.active,
        "practitioner": {"reference": f"Practitioner/{u.id}", "display": u.full_name},
        "organization": {"reference": f"Organization/{u.facility_id}"} if u.facility_id else None,
        "location": [{"reference": f"Location/{u.facility_id}"}] if u.facility_id else None,
        "code": [coded(ROLE_SYSTEM, code, display)],
    })


def read_staff(rid: str, _by: User) -> User:
    user = db.session.get(User, record_id(rid))
    if user is None or user.role not in STAFF:
        raise NotFound("No Practitioner with that id.")
    return user


def visible_staff(_by: User) -> fs.Query:
    return sa.select(User).where(User.role.in_(STAFF))


def role_token(query: fs.Query, values: list[str], modifier: str | None) -> fs.Query:
    by_code = {code: role for role, (code, _d) in ROLE_CODES.items()}
    roles = [by_code[c] for s, c in fs.token_values(values) if s in (None, ROLE_SYSTEM) and c in by_code]
    return query.where(User.role.in_(roles) if roles else sa.false())


fs.register(ResourceType(
    name="Practitioner", model=User, to_fhir=practitioner_to_fhir, read=read_staff, visible=visible_staff,
    audited=False, documentation="Staff: doctors, clinic staff, pharmacists.",
    params={"name": SearchParam("name", "string", fs.string(User.full_name), "Part of the name (prefix)")},
    sorts={"name": User.full_name},
))
fs.register(ResourceType(
    name="PractitionerRole", model=User, to_fhir=role_to_fhir, read=read_staff, visible=visible_staff,
    audited=False, documentation="Each staff member's role at their facility.",
    params={
        "practitioner": fs.ref_param("practitioner", User.id, "Practitioner", "The practitioner"),
        "organization": fs.ref_param("organization", User.facility_id, "Organization", "The facility"),
        "role": SearchParam("role", "token", role_token, f"doctor, nurse, pharmacist ({ROLE_SYSTEM})"),
    },
    includes={"practitioner": ("Practitioner", lambda u: [str(u.id)]),
              "organization": ("Organization", lambda u: [str(u.facility_id)] if u.facility_id else [])},
))


def organization_to_fhir(f: Facility) -> dict[str, Any]:
    kind = "prov"
    return fs.compact({
        "resourceType": "Organization",
        "id": str(f.id),
        "identifier": [{"system": FACILITY_SYSTEM, "value": f.code}],
        "active": True,
        "type": [coded("http://terminology.hl7.org/CodeSystem/organization-type", kind, "Healthcare Provider")],
        "name": f.name,
        "address": [{"text": f.address}] if f.address else None,
    })


def location_to_fhir(f: Facility) -> dict[str, Any]:
    kind = ("HOSP", "Hospital") if f.kind is FacilityKind.HOSPITAL else ("OF", "Outpatient facility")
    types = [coded("http://terminology.hl7.org/CodeSystem/v3-RoleCode", *kind)]
    if f.has_pharmacy:
        types.append(coded("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "PHARM", "Pharmacy"))
    return fs.compact({
        "resourceType": "Location",
        "id": str(f.id),
        "identifier": [{"system": FACILITY_SYSTEM, "value": f.code}],
        "status": "active",
        "name": f.name,
        "mode": "instance",
        "type": types,
        "address": {"text": f.address} if f.address else None,
        "managingOrganization": {"reference": f"Organization/{f.id}"},
    })


def read_facility(rid: str, _by: User) -> Facility:
    facility = db.session.get(Facility, record_id(rid))
    if facility is None:
        raise NotFound("No facility with that id.")
    return facility


def _facility_params() -> dict[str, SearchParam]:
    return {"name": SearchParam("name", "string", fs.string(Facility.name), "Start of the name"),
            "identifier": SearchParam("identifier", "token", fs.token(Facility.code, system=FACILITY_SYSTEM),
                                      f"Facility code ({FACILITY_SYSTEM})")}


fs.register(ResourceType(
    name="Organization", model=Facility, to_fhir=organization_to_fhir, read=read_facility,
    visible=lambda _by: sa.select(Facility), audited=False, params=_facility_params(),
    documentation="The hospital and the clinics.", sorts={"name": Facility.name},
))
fs.register(ResourceType(
    name="Location", model=Facility, to_fhir=location_to_fhir, read=read_facility,
    visible=lambda _by: sa.select(Facility), audited=False,
    params={**_facility_params(),
            "organization": fs.ref_param("organization", Facility.id, "Organization",
                                         "The organization running the place")},
    documentation="Where care happens: the hospital, each clinic and its pharmacy.", sorts={"name": Facility.name},
))
