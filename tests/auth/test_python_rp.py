"""A Python relying party that shares no code with the server: pyoidc (``oic``) discovers the provider, loads
its keys, runs the code flow with PKCE, verifies the ID token (signature, issuer, audience, nonce), calls
userinfo and refreshes."""

from __future__ import annotations

from urllib.parse import urlsplit

from oic import rndstr
from oic.oic import Client
from oic.oic.message import AccessTokenResponse, AuthorizationResponse, OpenIDSchema, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from tests.auth.conftest import CALLBACK, browser_session, consent


def test_pyoidc_relying_party_signs_a_doctor_in(oauth_env):
    env = oauth_env
    doctor = env.factories.doctor()
    reg = env.register(public=False, scope="openid profile email fhirUser offline_access user/Patient.rs")
    rp = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    provider = rp.provider_config(env.base)
    assert provider["issuer"] == env.base and "end_session_endpoint" in provider
    rp.store_registration_info(RegistrationResponse(client_id=reg.client_id, client_secret=reg.client_secret,
                                                    redirect_uris=[CALLBACK]))
    state, nonce = rndstr(), rndstr()
    pkce, verifier = rp.add_code_challenge()
    request = rp.construct_AuthorizationRequest(request_args={
        "client_id": reg.client_id, "response_type": "code", "scope": ["openid", "profile", "email", "fhirUser",
                                                                        "offline_access", "user/Patient.rs"],
        "nonce": nonce, "redirect_uri": CALLBACK, "state": state, **pkce})
    location = consent(browser_session(env.base, doctor), request.request(rp.authorization_endpoint))
    answer = rp.parse_response(AuthorizationResponse, info=urlsplit(location.headers["Location"]).query,
                               sformat="urlencoded")
    assert answer["state"] == state and answer["iss"] == env.base

    token = rp.do_access_token_request(state=state, request_args={
        "code": answer["code"], "redirect_uri": CALLBACK, "code_verifier": verifier},
        authn_method="client_secret_basic")
    assert isinstance(token, AccessTokenResponse), token.to_dict()
    id_token = token["id_token"]  # verified by pyoidc against the provider's JWKS
    assert id_token["iss"] == env.base and id_token["aud"] == [reg.client_id] and id_token["nonce"] == nonce
    assert id_token["sub"] == str(doctor.id) and id_token["fhirUser"].endswith(f"Practitioner/{doctor.id}")

    info = rp.do_user_info_request(state=state)
    assert isinstance(info, OpenIDSchema), info.to_dict()
    assert info["email"] == doctor.email and info["sub"] == str(doctor.id)

    refreshed = rp.do_access_token_refresh(state=state, authn_method="client_secret_basic")
    assert isinstance(refreshed, AccessTokenResponse) and refreshed["access_token"] != token["access_token"]
