"""Two-step sign-in with TOTP: enrolment, sign-in, replay, recovery codes, lockout, audit."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.auth.oauth_models import MfaFactor, MfaRecoveryCode
from tests.conftest import PASSWORD

SECRET_RE = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
CODES_RE = re.compile(r"<code>([0-9a-f]{8}-[0-9a-f]{8})</code>")


@pytest.fixture
def mfa_on(app, monkeypatch):
    monkeypatch.setitem(app.config, "MFA_REQUIRED_ROLES", ("doctor", "pharmacist", "admin"))


def _password(client, user):
    return client.post("/sign-in", data={"email": user.email, "password": PASSWORD})


def _enrol(client, user):
    resp = _password(client, user)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/sign-in/set-up-code")
    page = client.get("/sign-in/set-up-code").get_data(as_text=True)
    assert 'src="data:image/svg+xml;base64,' in page
    secret = SECRET_RE.search(page).group(1)
    enrolment_code = pyotp.TOTP(secret).now()
    done = client.post("/sign-in/set-up-code", data={"code": enrolment_code})
    assert done.status_code == 200
    codes = CODES_RE.findall(done.get_data(as_text=True))
    assert len(codes) == 10
    return secret, codes


def _next_code(secret):
    """A code valid in the next 30-second step (accepted for clock drift, never used before)."""
    return pyotp.TOTP(secret).at(int(time.time()) + 30)


def _events(user_id, action):
    return db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == user_id,
                                                          AuditEvent.action == action)).all()


@pytest.mark.smoke
def test_doctor_must_enrol_then_signs_in_with_a_code(client, factories, mfa_on):
    doctor = factories.doctor()
    resp = _password(client, doctor)
    assert resp.headers["Location"].endswith("/sign-in/set-up-code")
    assert client.get("/api/v1/me").status_code == 401  # a password alone signs nobody in
    page = client.get("/sign-in/set-up-code").get_data(as_text=True)
    secret = SECRET_RE.search(page).group(1)
    wrong = client.post("/sign-in/set-up-code", data={"code": "000000"})
    assert wrong.status_code == 422 and "not correct" in wrong.get_data(as_text=True)
    enrolment_code = pyotp.TOTP(secret).now()
    done = client.post("/sign-in/set-up-code", data={"code": enrolment_code})
    assert done.status_code == 200 and len(CODES_RE.findall(done.get_data(as_text=True))) == 10
    assert client.get("/api/v1/me").json["email"] == doctor.email

    # Stored encrypted and hashed, never in the clear.
    factor = db.session.get(MfaFactor, doctor.id)
    assert secret not in factor.secret_encrypted
    codes = CODES_RE.findall(done.get_data(as_text=True))
    stored = db.session.scalars(sa.select(MfaRecoveryCode.code_hash).where(MfaRecoveryCode.user_id == doctor.id))
    assert not set(codes) & set(stored)

    client.post("/sign-out")
    resp = _password(client, doctor)
    assert resp.headers["Location"].endswith("/sign-in/code")
    replay = client.post("/sign-in/code", data={"code": enrolment_code})
    assert replay.status_code == 401  # the enrolment code cannot be used twice
    ok = client.post("/sign-in/code", data={"code": _next_code(secret)})
    assert ok.status_code == 302
    assert client.get("/api/v1/me").status_code == 200
    assert _events(doctor.id, "auth.mfa.enrol")
    outcomes = {e.outcome for e in _events(doctor.id, "auth.mfa.verify")}
    assert outcomes == {Outcome.SUCCESS, Outcome.FAILURE}


def test_recovery_code_works_once(make_client, factories, mfa_on):
    pharmacist = factories.pharmacist()
    first = make_client()
    _secret, codes = _enrol(first, pharmacist)
    second = make_client()
    _password(second, pharmacist)
    assert second.post("/sign-in/code", data={"code": codes[0]}).status_code == 302
    third = make_client()
    _password(third, pharmacist)
    assert third.post("/sign-in/code", data={"code": codes[0]}).status_code == 401
    assert third.post("/sign-in/code", data={"code": codes[1]}).status_code == 302


def test_wrong_codes_lock_the_second_step(make_client, factories, mfa_on, app):
    admin = factories.admin()
    secret, _codes = _enrol(make_client(), admin)
    browser = make_client()
    _password(browser, admin)
    for _ in range(app.config["MFA_MAX_ATTEMPTS"]):
        assert browser.post("/sign-in/code", data={"code": "123456"}).status_code in (401, 429)
    locked = browser.post("/sign-in/code", data={"code": _next_code(secret)})
    assert locked.status_code == 429 and "Try again after" in locked.get_data(as_text=True)
    assert client_not_signed_in(browser)
    reasons = [e.detail["reason"] for e in _events(admin.id, "auth.mfa.verify") if e.detail]
    assert "wrong code; locked" in reasons and "locked" in reasons


def client_not_signed_in(client):
    return client.get("/api/v1/me").status_code == 401


def test_patients_may_opt_in_and_out(client, factories, login, mfa_on):
    patient = factories.patient(with_account=True).user
    login(client, patient)  # no second step for patients by default
    page = client.get("/sign-in/set-up-code").get_data(as_text=True)
    secret = SECRET_RE.search(page).group(1)
    assert client.post("/sign-in/set-up-code", data={"code": pyotp.TOTP(secret).now()}).status_code == 200
    assert "An authenticator is set up" in client.get("/account/two-step").get_data(as_text=True)
    client.post("/sign-out")
    assert _password(client, patient).headers["Location"].endswith("/sign-in/code")
    assert client.post("/sign-in/code", data={"code": _next_code(secret)}).status_code == 302
    client.post("/account/two-step/remove")
    assert "Two-step sign-in is off" in client.get("/account/two-step").get_data(as_text=True)


def test_doctor_cannot_switch_off_required_mfa(make_client, factories, mfa_on):
    doctor = factories.doctor()
    browser = make_client()
    _enrol(browser, doctor)
    browser.post("/account/two-step/remove")
    assert db.session.get(MfaFactor, doctor.id) is not None
    denied = [e for e in _events(doctor.id, "auth.mfa.remove") if e.outcome is Outcome.DENIED]
    assert denied


def test_default_test_config_keeps_password_only_sign_in(client, factories, login):
    login(client, factories.doctor())
    assert client.get("/api/v1/me").status_code == 200


def test_admin_resets_a_lost_authenticator(make_client, factories, login):
    doctor = factories.doctor()
    doctor_browser = make_client()
    login(doctor_browser, doctor)
    page = doctor_browser.get("/sign-in/set-up-code").get_data(as_text=True)
    secret = SECRET_RE.search(page).group(1)
    doctor_browser.post("/sign-in/set-up-code", data={"code": pyotp.TOTP(secret).now()})
    admin_browser = make_client()
    login(admin_browser, factories.admin())
    assert "An authenticator is set up" in admin_browser.get(f"/admin/users/{doctor.id}").get_data(as_text=True)
    admin_browser.post(f"/admin/users/{doctor.id}/two-step/reset")
    assert db.session.get(MfaFactor, doctor.id) is None
    assert doctor_browser.get("/api/v1/me").status_code == 401  # their sessions ended
    assert db.session.scalar(sa.select(AuditEvent).where(
        AuditEvent.action == "auth.mfa.remove", AuditEvent.resource_id == str(doctor.id),
        AuditEvent.outcome == Outcome.SUCCESS)) is not None
