"""A client the platform does not ship: SMART's Python ``fhirclient`` reads the CapabilityStatement (and the OAuth
endpoints in it), gets a token as a machine client, and searches, over real HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from fhirclient import client as smart_client
from fhirclient.models.condition import Condition
from fhirclient.models.patient import Patient

from app import db
from app.auth import oauth_service
from app.patients import service as patients


def test_python_fhirclient_gets_a_system_token_and_searches(live_server: str, live_factories: Any) -> None:
    family = f"Client{uuid.uuid4().hex[:8]}"
    clinic = live_factories.facility(name="Client test clinic")
    service_account = live_factories.nurse(facility=clinic)
    maria = live_factories.patient(facility=clinic, given_name="Maria", family_name=family)
    live_factories.patient(facility=clinic, given_name="Tomas", family_name=family)
    patients.add_condition(maria, by=service_account, description="Asthma", code="J45.909")
    registered, secret = oauth_service.register_client(oauth_service.ClientInput(
        name="Lab system", is_public=False, redirect_uris=["https://lab.example/callback"],
        scope="system/Patient.rs system/Condition.rs", grants=["client_credentials"],
        service_user_id=service_account.id), by=live_factories.admin())
    db.session.commit()

    smart = smart_client.FHIRClient(settings={
        "app_id": registered.client_id, "app_secret": secret, "api_base": f"{live_server}/fhir/",
        "scope": "system/Patient.rs system/Condition.rs"})
    smart.wants_patient = False
    assert smart.server.capabilityStatement.fhirVersion == "4.0.1"
    smart.server.authorize()
    assert smart.server.auth.access_token

    found = list(Patient.where(struct={"family": family, "_sort": "given"}).perform_resources_iter(smart.server))
    assert [p.name[0].given[0] for p in found] == ["Maria", "Tomas"]
    assert found[0].identifier[0].system == "urn:town-health:mrn"
    conditions = list(Condition.where(struct={"patient": f"Patient/{maria.id}"}).perform_resources_iter(
        smart.server))
    assert [(c.code.coding[0].code, c.subject.reference) for c in conditions] == [("J45.909", f"Patient/{maria.id}")]
    again = Patient.read(found[1].id, smart.server)
    assert again.name[0].family == family


def test_python_fhirclient_runs_a_backend_services_flow_and_searches(live_server: str, live_factories: Any) -> None:
    """SMART Backend Services: the system proves itself with its own key (a signed JWT assertion), no shared
    secret, and searches with `system/` scopes."""
    import requests
    from joserfc.jwk import KeySet, RSAKey

    from tests.auth.conftest import client_assertion

    family = f"Backend{uuid.uuid4().hex[:8]}"
    clinic = live_factories.facility(name="Backend test clinic")
    service_account = live_factories.nurse(facility=clinic)
    live_factories.patient(facility=clinic, given_name="Ana", family_name=family)
    key = RSAKey.generate_key(2048, parameters={"kid": "lab-1"}, private=True)
    registered, secret = oauth_service.register_client(oauth_service.ClientInput(
        name="Lab system with a key", is_public=False, redirect_uris=[], scope="system/Patient.rs",
        grants=["client_credentials"], service_user_id=service_account.id, auth_method="private_key_jwt",
        jwks=KeySet([key]).as_dict(private=False)), by=live_factories.admin())
    db.session.commit()
    assert secret is None
    token_url = requests.get(f"{live_server}/fhir/.well-known/smart-configuration", timeout=10).json()[
        "token_endpoint"]

    smart = smart_client.FHIRClient(settings={
        "app_id": registered.client_id, "api_base": f"{live_server}/fhir/", "scope": "system/Patient.rs",
        "jwt_token": client_assertion(key, registered.client_id, token_url)})
    smart.wants_patient = False
    assert smart.server.capabilityStatement.fhirVersion == "4.0.1"  # where it learns the token endpoint
    smart.server.authorize()
    assert smart.server.auth.access_token
    found = list(Patient.where(struct={"family": family}).perform_resources_iter(smart.server))
    assert [p.name[0].given[0] for p in found] == ["Ana"]
