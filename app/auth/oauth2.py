"""All Authlib wiring: the authorization server (code + PKCE, refresh with rotation, client credentials),
OpenID Connect (ID tokens, discovery, JWKS, userinfo), revocation (RFC 7009), introspection (RFC 7662),
signing keys, and looking up the bearer tokens presented to the resource servers.

Tokens are opaque random strings stored as SHA-256 digests. Every token issued from one authorisation
shares a ``family_id``: presenting an already-rotated refresh token, or replaying a used code, revokes the
whole family (RFC 9700 §4.14 / RFC 6749 §4.1.2).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants, scope_to_list
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from authlib.oidc.core import UserInfo
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError
from authlib.oidc.core.grants import OpenIDCode as _OpenIDCode
from flask import Flask, Response, current_app, request, session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import scopes as smart
from app.auth.models import Role, User
from app.auth.oauth_models import OAuthAssertionJti, OAuthAuthorizationCode, OAuthClient, OAuthToken, digest

logger = logging.getLogger(__name__)
CLIENT_AUTH = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]


# ---------------------------------------------------------------- signing keys


def jwks_path() -> Path:
    configured = current_app.config.get("OAUTH_JWKS_PATH")
    return Path(configured) if configured else Path(current_app.config["INSTANCE_PATH"]) / "oauth-jwks.json"


def _generate_key(alg: str, *, status: str) -> dict[str, Any]:
    key: RSAKey | ECKey
    key = ECKey.generate_key("P-256", private=True) if alg == "ES256" else RSAKey.generate_key(2048, private=True)
    data = key.as_dict(private=True)
    data.update(kid=key.thumbprint(), use="sig", alg=alg)
    return {"jwk": data, "created_at": int(time.time()), "retired_at": None, "status": status}


def _write_keys(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": entries}, fh, indent=1)
    os.replace(tmp, path)


def _status(entry: dict[str, Any]) -> str:
    """"next" (published, signs nothing yet), "current" (signs) or "retired" (published until its tokens expire)."""
    return entry.get("status") or ("retired" if entry.get("retired_at") else "current")


def _key_entries() -> list[dict[str, Any]]:
    """Every published key, in the file's order; generated into instance/ when absent (dev)."""
    path = jwks_path()
    if not path.exists():
        if current_app.config.get("ENV") == "production":
            raise RuntimeError(f"no OAuth signing keys at {path}: run `hospital oauth-rotate-key --create`")
        alg = current_app.config["OAUTH_SIGNING_ALG"]
        _write_keys(path, [_generate_key(alg, status="current"), _generate_key(alg, status="next")])
    mtime = path.stat().st_mtime_ns
    cache = current_app.extensions.setdefault("oauth_keys", {})
    if cache.get("path") != str(path) or cache.get("mtime") != mtime:
        cache.update(path=str(path), mtime=mtime, entries=json.loads(path.read_text())["keys"])
    return cache["entries"]


def _current_entry(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in entries if _status(e) == "current")


class KeyRotationTooSoon(RuntimeError):
    """The next key has not been published for a whole JWKS cache lifetime yet."""


def rotate_signing_key(path: Path | None = None, *, now: int | None = None) -> str:
    """Let the published next key sign and publish a fresh next key; the old key stays published until every
    token it signed has expired. Clients cache the JWKS for ``OAUTH_JWKS_MAX_AGE`` seconds, so the next key
    must have been published at least that long: earlier, a client could meet a signature it cannot check.

    :raises KeyRotationTooSoon: the next key is younger than one JWKS cache lifetime.
    """
    path = path or jwks_path()
    entries = json.loads(path.read_text())["keys"] if path.exists() else []
    now = int(time.time()) if now is None else now
    alg = current_app.config["OAUTH_SIGNING_ALG"]
    max_age = current_app.config["OAUTH_JWKS_MAX_AGE"]
    upcoming = next((e for e in entries if _status(e) == "next"), None)
    if upcoming is None:
        # An old key file without a next key: publish one now; it can sign once caches have seen it.
        upcoming = _generate_key(alg, status="next")
        if entries:
            _write_keys(path, [upcoming, *entries])
            raise KeyRotationTooSoon(f"published the next key {upcoming['jwk']['kid']}; run this again in "
                                     f"{max_age} seconds to make it sign")
        upcoming["created_at"] = now - max_age  # a brand-new server: nothing is cached anywhere yet
    if upcoming["created_at"] + max_age > now:
        wait = upcoming["created_at"] + max_age - now
        raise KeyRotationTooSoon(f"the next key was published {now - upcoming['created_at']} seconds ago; "
                                 f"clients may cache the key set for {max_age} seconds: try again in {wait} seconds")
    keep_for = max(current_app.config["OAUTH_ID_TOKEN_SECONDS"], current_app.config["OAUTH_ACCESS_TOKEN_SECONDS"])
    for entry in entries:
        if _status(entry) == "current":
            entry.update(status="retired", retired_at=now)
    retired = [e for e in entries if _status(e) == "retired" and e["retired_at"] + keep_for > now]
    upcoming.update(status="current")
    _write_keys(path, [upcoming, _generate_key(alg, status="next"), *retired])
    return upcoming["jwk"]["kid"]


def _cached(name: str, build: Any) -> Any:
    """Parsed keys are cached per key-file version: loading an RSA private key costs tens of milliseconds."""
    entries = _key_entries()
    cache = current_app.extensions["oauth_keys"]
    if cache.get(f"{name}_for") is not entries:
        cache[name] = build(entries)
        cache[f"{name}_for"] = entries
    return cache[name]


def signing_key() -> RSAKey | ECKey:
    return _cached("signer", lambda entries: KeySet.import_key_set(
        {"keys": [_current_entry(entries)["jwk"]]}).keys[0])


def signing_kid() -> str:
    return str(_current_entry(_key_entries())["jwk"]["kid"])


def public_jwks() -> dict[str, Any]:
    return _cached("public", lambda entries: KeySet.import_key_set(
        {"keys": [e["jwk"] for e in entries]}).as_dict(private=False))


def signing_algorithms() -> list[str]:
    """The algorithms of the keys that sign or will sign (metadata lists nothing without a key)."""
    return sorted({e["jwk"]["alg"] for e in _key_entries() if _status(e) != "retired"})


def issuer() -> str:
    return current_app.config.get("OAUTH_ISSUER") or request.url_root.rstrip("/")


def fhir_base() -> str:
    """The FHIR server's base URL: the ``aud`` SMART apps send (FHIR_BASE_URL, or ``<issuer>/fhir``)."""
    return (current_app.config.get("FHIR_BASE_URL") or f"{issuer()}/fhir").rstrip("/")


def resource_servers() -> list[str]:
    """The resource servers a token may be issued for: this server's JSON API (the issuer) and FHIR."""
    return [issuer(), fhir_base()]


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the ``resource`` (or SMART ``aud``) is not a resource server of this one."""

    error = "invalid_target"


def requested_audience(data: dict[str, Any], *, default: list[str]) -> str:
    """The audience (space-separated resource servers) from ``aud``/``resource``, or ``default``.

    :raises InvalidTargetError: a value that is not one of :func:`resource_servers`.
    """
    known = resource_servers()
    wanted = [str(v).rstrip("/") for v in (data.get("aud"), data.get("resource")) if v]
    for value in wanted:
        if value not in known:
            raise InvalidTargetError(f"'{value[:200]}' is not a resource server of this authorization server; "
                                     f"use {known[1]}.")
    return " ".join(dict.fromkeys(wanted or default))


# ---------------------------------------------------------------- storage hooks


def query_client(client_id: str) -> OAuthClient | None:
    return db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == client_id,
                                                          OAuthClient.active.is_(True)))


def find_token(token_string: str, hint: str | None = None, *, lock: bool = False,
               strict: bool = False) -> OAuthToken | None:
    """Look a token up by its digest; ``lock`` holds the row (PostgreSQL) so two refreshes cannot both win.

    ``strict``: only the kind named by ``hint`` (a bearer credential must be an access token, a refresh grant a
    refresh token). Otherwise the hint only sets the order (RFC 7009 §2.1, RFC 7662 §2.1). The row's
    ``presented`` says which kind ``token_string`` was.
    """
    hashed = digest(token_string)
    order = ["refresh_token", "access_token"] if hint == "refresh_token" else ["access_token", "refresh_token"]
    for kind in order[:1] if strict else order:
        column = OAuthToken.refresh_token_hash if kind == "refresh_token" else OAuthToken.access_token_hash
        query = sa.select(OAuthToken).where(column == hashed)
        token = db.session.scalar(query.with_for_update() if lock else query)
        if token is not None:
            token.presented = kind
            return token
    return None


def revoke_family(family_id: str, *, reason: str) -> int:
    """Revoke every token of one authorisation; returns how many were still live."""
    now = db.utcnow()
    result = db.session.execute(
        sa.update(OAuthToken).where(OAuthToken.family_id == family_id, OAuthToken.access_revoked_at.is_(None))
        .values(access_revoked_at=now, revoke_reason=reason))
    db.session.execute(sa.update(OAuthToken).where(OAuthToken.family_id == family_id,
                                                   OAuthToken.refresh_revoked_at.is_(None))
                       .values(refresh_revoked_at=now))
    db.session.expire_all()
    return result.rowcount or 0  # type: ignore[attr-defined]


def _save_token(token: dict[str, Any], req: Any) -> None:
    client: OAuthClient = req.client
    grant_type = req.payload.grant_type
    scope = token.get("scope", "")
    user: User | None = req.user
    patient_id: int | None = None
    if grant_type == "authorization_code":
        code: OAuthAuthorizationCode = req.authorization_code
        code.family_id = code.family_id or secrets.token_hex(16)
        family = code.family_id
        patient_id, audience = code.patient_id, code.audience or issuer()
        if "offline_access" not in scope_to_list(scope):
            token.pop("refresh_token", None)
    elif grant_type == "refresh_token":
        family = req.refresh_token.family_id
        patient_id, audience = req.refresh_token.patient_id, req.refresh_token.audience or issuer()
    else:
        family = secrets.token_hex(16)
        user = client.service_user
        audience = requested_audience(req.payload.data, default=resource_servers())
    if patient_id is None and user is not None and user.role is Role.PATIENT and any(
            s.startswith(("patient/", "launch")) for s in scope_to_list(scope) or []):
        patient_id = _own_patient_id(user)
    if patient_id is not None:
        token["patient"] = str(patient_id)  # SMART launch context: whose record the token reaches
    refresh = token.get("refresh_token")
    row = OAuthToken(
        patient_id=patient_id, audience=audience,
        client_id=client.client_id, user_id=user.id if user else None, grant_type=grant_type, scope=scope,
        access_token_hash=digest(token["access_token"]), refresh_token_hash=digest(refresh) if refresh else None,
        family_id=family, user_epoch=user.session_epoch if user else 0, issued_at=db.utcnow(),
        expires_in=int(token.get("expires_in", 0)),
        refresh_expires_at=(db.utcnow() + timedelta(days=current_app.config["OAUTH_REFRESH_TOKEN_DAYS"])
                            if refresh else None))
    db.session.add(row)
    db.session.flush()
    audit.record("oauth.token.issue", by=user, resource_type="OAuthToken", resource_id=row.id,
                 detail={"client_id": client.client_id, "grant_type": grant_type, "scope": scope})


# ---------------------------------------------------------------- grants


class PkceS256(CodeChallenge):
    """PKCE with S256 only; a public client without a challenge is refused at the authorization endpoint."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        req = grant.request
        challenge = req.payload.data.get("code_challenge")
        if not challenge and grant.client.is_public:
            raise InvalidRequestError("Public clients must send a PKCE 'code_challenge' (S256).")
        if challenge and req.payload.data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: OAuthAuthorizationCode) -> str | None:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: OAuthAuthorizationCode) -> str | None:
        return authorization_code.code_challenge_method


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: OAuthClient) -> str:
        """``redirect_uri`` is required (OpenID Connect §3.1.2.1, SMART), not taken from the registration."""
        if not request.payload.redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.", state=request.payload.state)
        return grants.AuthorizationCodeGrant.validate_authorization_redirect_uri(request, client)

    def validate_authorization_request(self) -> str:
        """Also refuse request objects (unsupported, so never silently ignored) and foreign audiences."""
        redirect_uri = super().validate_authorization_request()
        data = self.request.payload.data
        state = self.request.payload.state
        if data.get("request"):
            raise RequestNotSupportedError(redirect_uri=redirect_uri, state=state)
        if data.get("request_uri"):
            raise RequestURINotSupportedError(redirect_uri=redirect_uri, state=state)
        try:
            self.request.audience = requested_audience(data, default=[issuer()])
        except InvalidTargetError as error:
            error.redirect_uri, error.state = redirect_uri, state
            raise
        return redirect_uri

    def save_authorization_code(self, code: str, req: Any) -> None:
        data = req.payload.data
        db.session.add(OAuthAuthorizationCode(
            patient_id=getattr(req, "launch_patient_id", None), audience=getattr(req, "audience", None),
            code_hash=digest(code), client_id=req.client.client_id, user_id=req.user.id,
            redirect_uri=req.payload.redirect_uri or "", scope=req.payload.scope or "", nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"), code_challenge_method=data.get("code_challenge_method"),
            auth_time=int((req.user.last_sign_in_at or db.utcnow()).timestamp()),
            amr=" ".join(session.get("amr", ["pwd"])), created_at=db.utcnow(),
            expires_at=db.utcnow() + timedelta(seconds=current_app.config["OAUTH_CODE_SECONDS"])))
        db.session.flush()

    def query_authorization_code(self, code: str, client: OAuthClient) -> OAuthAuthorizationCode | None:
        row = db.session.scalar(sa.select(OAuthAuthorizationCode).where(
            OAuthAuthorizationCode.code_hash == digest(code), OAuthAuthorizationCode.client_id == client.client_id)
            .with_for_update())  # a code raced by two requests is exchanged once
        if row is None:
            return None
        if row.used_at is not None:
            revoked = revoke_family(row.family_id, reason="code reuse") if row.family_id else 0
            audit.record("oauth.code.reuse", by=row.user, outcome=Outcome.DENIED, resource_type="OAuthClient",
                         resource_id=client.client_id, detail={"tokens_revoked": revoked})
            return None
        if row.is_expired():
            return None
        return row

    def delete_authorization_code(self, authorization_code: OAuthAuthorizationCode) -> None:
        authorization_code.used_at = db.utcnow()

    def authenticate_user(self, authorization_code: OAuthAuthorizationCode) -> User | None:
        user = authorization_code.user
        return user if user is not None and user.active else None


class OpenIDCode(_OpenIDCode):
    def exists_nonce(self, nonce: str, req: Any) -> bool:
        return db.session.scalar(sa.select(OAuthAuthorizationCode.id).where(
            OAuthAuthorizationCode.client_id == req.payload.client_id,
            OAuthAuthorizationCode.nonce == nonce)) is not None

    def resolve_client_private_key(self, client: OAuthClient) -> Any:
        return signing_key()

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return current_app.config["OAUTH_SIGNING_ALG"]

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        return {"alg": self.get_client_algorithm(client), "kid": signing_kid(), "typ": "JWT"}

    def get_client_claims(self, client: OAuthClient) -> dict[str, Any]:
        return {"iss": issuer(), "aud": [client.client_id],
                "exp": int(time.time()) + current_app.config["OAUTH_ID_TOKEN_SECONDS"]}

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        return user_info(user, scope)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True

    def _validate_token_scope(self, token: OAuthToken) -> None:
        """A narrower scope is judged by meaning: ``patient/*.rs`` covers ``patient/Patient.r``."""
        wanted = scope_to_list(self.request.payload.scope) or []
        if wanted and not smart.all_covered(token.scopes, wanted):
            raise InvalidScopeError("The requested scope is wider than the one granted.")

    def authenticate_refresh_token(self, refresh_token: str) -> OAuthToken | None:
        row = find_token(refresh_token, "refresh_token", lock=True, strict=True)
        if row is None:
            return None
        if row.refresh_revoked_at is not None:
            if row.revoke_reason == "rotated":
                revoked = revoke_family(row.family_id, reason="refresh reuse")
                audit.record("oauth.refresh.reuse", by=row.user, outcome=Outcome.DENIED,
                             resource_type="OAuthClient", resource_id=row.client_id,
                             detail={"tokens_revoked": revoked})
            return None
        if row.is_refresh_expired():
            return None
        return row

    def authenticate_user(self, refresh_token: OAuthToken) -> User | None:
        user = refresh_token.user
        if user is None or not user.active or user.session_epoch != refresh_token.user_epoch:
            return None
        return user

    def revoke_old_credential(self, refresh_token: OAuthToken) -> None:
        now = db.utcnow()
        refresh_token.refresh_revoked_at = now
        refresh_token.access_revoked_at = refresh_token.access_revoked_at or now
        refresh_token.revoke_reason = "rotated"


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """Machine clients act as their registered service account, with ``system/...`` scopes only."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        requested_audience(self.request.payload.data, default=[])  # refuse a foreign ``resource`` early
        client: OAuthClient = self.request.client
        if client.service_user is None or not client.service_user.active:
            raise InvalidRequestError("This client has no active service account.")
        for scope in scope_to_list(self.request.payload.scope) or []:
            parsed = smart.parse(scope)
            if parsed is None or parsed.context != "system":
                raise InvalidScopeError(f"'{scope}' is not a system scope.")


def check_user_scopes(user: User, scope: str) -> str | None:
    """Why ``user`` cannot hold ``scope`` (patient/ only for patients, user/ only for people, never system/)."""
    for item in scope_to_list(scope) or []:
        parsed = smart.parse(item)
        if parsed is None:
            continue
        if parsed.context == "system":
            return f"'{item}' is only for machine clients."
        if parsed.context == "patient" and user.role is not Role.PATIENT and "launch/patient" not in (
                scope_to_list(scope) or []):
            return f"'{item}' is for one patient's record: the app must also ask for launch/patient."
        if parsed.context == "user" and user.role is Role.PATIENT:
            return f"'{item}' is for staff; a patient's app asks for patient/ scopes."
    return None


class RevocationEndpoint(_RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH

    def query_token(self, token_string: str, token_type_hint: str | None) -> OAuthToken | None:
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token: OAuthToken, req: Any) -> None:
        if token.presented == "refresh_token":
            revoke_family(token.family_id, reason="revoked")  # RFC 7009 §2.1: the grant goes too
        else:
            token.access_revoked_at = token.access_revoked_at or db.utcnow()
            token.revoke_reason = token.revoke_reason or "revoked"
        audit.record("oauth.token.revoke", by=token.user, resource_type="OAuthToken", resource_id=token.id,
                     detail={"client_id": token.client_id})


class IntrospectionEndpoint(_IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> OAuthToken | None:
        return find_token(token_string, token_type_hint)

    def check_permission(self, token: OAuthToken, client: OAuthClient, req: Any) -> bool:
        return token.client_id == client.client_id

    def create_introspection_payload(self, token: OAuthToken | None) -> dict[str, Any]:
        """The state of the token presented: a refresh token reports its own revocation and expiry."""
        if token is None or (token.user is not None and (
                not token.user.active or token.user.session_epoch != token.user_epoch)):
            return {"active": False}
        if token.presented == "refresh_token":
            if token.refresh_revoked_at is not None or token.is_refresh_expired():
                return {"active": False}
        elif token.is_revoked() or token.is_expired():
            return {"active": False}
        return self.introspect_token(token)

    def introspect_token(self, token: OAuthToken) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "active": True, "client_id": token.client_id, "scope": token.scope,
            "iat": int(token.issued_at.timestamp()), "iss": issuer(),
        }
        if token.presented == "refresh_token":
            payload["token_type"] = "refresh_token"  # noqa: S105 - a token kind, not a secret
            if token.refresh_expires_at is not None:
                payload["exp"] = int(token.refresh_expires_at.timestamp())
        else:
            audiences = token.audiences or [issuer()]
            payload.update(token_type="Bearer", exp=int(token.expires_at.timestamp()),  # noqa: S106
                           aud=audiences[0] if len(audiences) == 1 else audiences)
        if token.user is not None:
            payload.update(sub=str(token.user.id), username=token.user.email, fhirUser=fhir_user(token.user))
        if token.patient_id is not None:
            payload["patient"] = str(token.patient_id)
        return payload


class PrivateKeyJwt(JWTBearerClientAssertion):
    """Client authentication with a JWT the client signs with its own key (RFC 7523, SMART asymmetric)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"
    ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]  # SMART asks servers for RS384 and ES384

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=self.ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(description=exc.description) from exc
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self) -> list[str]:
        return [f"{issuer()}/oauth/token", issuer()]

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet:
        if client.auth_method != "private_key_jwt" or not client.jwks:
            raise InvalidClientError(description="This client has no registered public keys.")
        return KeySet.import_key_set(client.jwks)

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Each assertion once: its ``jti`` is kept until the assertion expires."""
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp > time.time() + 600:
            raise InvalidClientError(description="The assertion must expire within five minutes.")
        now = db.utcnow()
        db.session.execute(sa.delete(OAuthAssertionJti).where(OAuthAssertionJti.expires_at < now))
        client_id = str(claims["sub"])[:48]
        if db.session.scalar(sa.select(OAuthAssertionJti.id).where(
                OAuthAssertionJti.client_id == client_id, OAuthAssertionJti.jti == str(jti)[:255])) is not None:
            return False
        db.session.add(OAuthAssertionJti(client_id=client_id, jti=str(jti)[:255],
                                         expires_at=datetime.fromtimestamp(exp + self.leeway, UTC)))
        db.session.flush()
        return True


class HospitalAuthorizationServer(AuthorizationServer):
    @staticmethod
    def _with_issuer(response: Response) -> Response:
        """Every redirect back to a client names this server (RFC 9207 §2), errors included."""
        if response.location and "iss" not in parse_qs(urlsplit(response.location).query):
            response.location = add_params_to_uri(response.location, {"iss": issuer()})
        return response

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Response:
        return self._with_issuer(super().handle_error_response(request, error))

    def create_authorization_response(self, request: Any = None, grant_user: Any = None,
                                      grant: Any = None) -> Response:
        return self._with_issuer(super().create_authorization_response(request, grant_user, grant))

    def validate_requested_scope(self, scope: str | None) -> None:
        """Only scopes this server understands (identity scopes and well-formed SMART scopes)."""
        for item in scope_to_list(scope) or []:
            if not smart.is_known(item):
                raise InvalidScopeError(f"Unknown scope '{item}'.")


authorization = HospitalAuthorizationServer()


def _own_patient_id(user: User) -> int | None:
    if user.role is not Role.PATIENT:
        return None
    from app.patients.models import Patient

    return db.session.scalar(sa.select(Patient.id).where(Patient.user_id == user.id))


def fhir_user(user: User) -> str:
    if user.role is Role.PATIENT:
        pid = _own_patient_id(user)
        return f"Patient/{pid}" if pid is not None else f"RelatedPerson/{user.id}"
    return f"Practitioner/{user.id}"


def user_info(user: User, scope: str) -> UserInfo:
    wanted = set(scope_to_list(scope) or [])
    info = UserInfo(sub=str(user.id))
    if "profile" in wanted:
        info["name"] = user.full_name
    if "email" in wanted:
        info["email"] = user.email
    if "fhirUser" in wanted:
        info["fhirUser"] = f"{fhir_base()}/{fhir_user(user)}"
    return info


# ---------------------------------------------------------------- bearer tokens on the API


def authenticate_bearer(token_string: str) -> tuple[OAuthToken | None, str]:
    """The live token for ``token_string`` and its user, or None with the reason."""
    token = find_token(token_string, "access_token", strict=True)
    if token is None:
        return None, "The token is unknown."
    if token.is_revoked():
        return None, "The token was revoked."
    if token.is_expired():
        return None, "The token has expired."
    if token.user is None or not token.user.active:
        return None, "The token's account is not active."
    if token.user.session_epoch != token.user_epoch:
        return None, "The account's password was reset since the token was issued."
    client = query_client(token.client_id)
    if client is None:
        return None, "The token's client is no longer registered."
    return token, ""


def init_app(app: Flask) -> None:
    """Bind the authorization server to ``app`` (bearer tokens are checked in :mod:`app.auth.bearer`)."""
    expires = app.config["OAUTH_ACCESS_TOKEN_SECONDS"]
    app.config.setdefault("OAUTH2_REFRESH_TOKEN_GENERATOR", True)
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {
        "authorization_code": expires, "refresh_token": expires, "client_credentials": expires})
    authorization.init_app(app, query_client=query_client, save_token=_save_token)
    if not authorization._token_grants:
        # OpenID Connect requires ``nonce`` only for implicit and hybrid flows; with the code flow it is optional
        # (and checked when sent), so standard clients such as oidc-client-ts and fhirclient sign in unchanged.
        authorization.register_grant(AuthorizationCodeGrant, [PkceS256(required=True), OpenIDCode(require_nonce=False)])
        authorization.register_grant(RefreshTokenGrant)
        authorization.register_grant(ClientCredentialsGrant)
        authorization.register_endpoint(RevocationEndpoint)
        authorization.register_endpoint(IntrospectionEndpoint)
        authorization.register_client_auth_method(PrivateKeyJwt.CLIENT_AUTH_METHOD, PrivateKeyJwt())
