"""Sign-in, lockout, sessions, CSRF and security headers, as a person at the browser meets them."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.auth.models import Role, User
from tests.conftest import PASSWORD


def _sign_in(client, email, password, **kw):
    return client.post("/sign-in", data={"email": email, "password": password}, **kw)


def _events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_sign_in_succeeds_and_lands_on_role_home(client, factories):
    nurse = factories.nurse()
    resp = _sign_in(client, nurse.email.upper(), PASSWORD)
    assert resp.status_code == 302
    assert client.get("/", follow_redirects=False).headers["Location"].endswith("/patients")
    assert [e.outcome for e in _events("auth.sign_in")][-1] is Outcome.SUCCESS


def test_wrong_password_and_unknown_email_get_the_same_generic_message(client, factories):
    nurse = factories.nurse()
    wrong = _sign_in(client, nurse.email, "not the password")
    unknown = _sign_in(client, "nobody@test.example", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    message = b"The email or password is not correct."
    assert message in wrong.data and message in unknown.data
    outcomes = [(e.actor_id, e.outcome) for e in _events("auth.sign_in")]
    assert (nurse.id, Outcome.FAILURE) in outcomes and (None, Outcome.FAILURE) in outcomes


@pytest.mark.smoke
def test_account_locks_after_repeated_failures_and_says_until_when(client, factories, app):
    doctor = factories.doctor()
    for _ in range(app.config["LOCKOUT_THRESHOLD"] - 1):
        assert _sign_in(client, doctor.email, "wrong password!").status_code == 401
    locked = _sign_in(client, doctor.email, "wrong password!")
    assert locked.status_code == 429
    assert b"Too many failed sign-ins. Try again after" in locked.data
    # Even the right password is refused while locked.
    assert _sign_in(client, doctor.email, PASSWORD).status_code == 429
    db.session.expire_all()
    assert db.session.get(User, doctor.id).locked_until is not None


def test_lock_expires(client, factories):
    doctor = factories.doctor()
    user = db.session.get(User, doctor.id)
    user.locked_until = db.utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert _sign_in(client, doctor.email, PASSWORD).status_code == 302


def test_address_is_blocked_after_spraying_many_accounts(client, factories, app):
    app.config["IP_LOCKOUT_THRESHOLD"] = 4
    try:
        victims = [factories.nurse() for _ in range(4)]
        for victim in victims:
            _sign_in(client, victim.email, "guess-guess-guess", environ_base={"REMOTE_ADDR": "10.9.9.9"})
        fresh = factories.nurse()
        blocked = _sign_in(client, fresh.email, PASSWORD, environ_base={"REMOTE_ADDR": "10.9.9.9"})
        assert blocked.status_code == 429
        # Another address is unaffected.
        assert _sign_in(client, fresh.email, PASSWORD, environ_base={"REMOTE_ADDR": "10.9.9.10"}).status_code == 302
    finally:
        app.config["IP_LOCKOUT_THRESHOLD"] = 20


def test_deactivated_account_cannot_sign_in_and_its_session_ends(make_client, factories, login):
    admin, nurse = factories.admin(), factories.nurse()
    nurse_browser, admin_browser = make_client(), make_client()
    login(nurse_browser, nurse)
    assert nurse_browser.get("/patients").status_code == 200
    login(admin_browser, admin)
    assert admin_browser.put(f"/api/v1/users/{nurse.id}/active", json={"active": False}).status_code == 200
    assert nurse_browser.get("/patients").status_code == 302  # bounced to sign-in
    assert _sign_in(make_client(), nurse.email, PASSWORD).status_code == 401


def test_staff_session_times_out_after_idle_minutes(client, factories, login, app):
    nurse = factories.nurse()
    login(client, nurse)
    with client.session_transaction() as sess:
        idle = timedelta(minutes=app.config["STAFF_IDLE_MINUTES"], seconds=5)
        sess["last_seen"] = (db.utcnow() - idle).isoformat()
    resp = client.get("/patients")
    assert resp.status_code == 302 and "/sign-in" in resp.headers["Location"]
    page = client.get("/sign-in")
    assert b"signed out after 15 minutes without activity" in page.data
    assert _events("auth.sign_out")[-1].detail == {"reason": "idle timeout"}


def test_activity_is_noted_in_the_cookie_at_most_every_30_seconds(client, factories, login):
    """Requests in a burst keep the cookie as it is; a request after a pause moves the idle clock on."""
    login(client, factories.nurse())
    client.get("/patients")
    with client.session_transaction() as sess:
        noted = sess["last_seen"]
    resp = client.get("/patients")
    assert resp.status_code == 200 and "Set-Cookie" not in resp.headers
    with client.session_transaction() as sess:
        assert sess["last_seen"] == noted
        sess["last_seen"] = (db.utcnow() - timedelta(seconds=31)).isoformat()
    assert "Set-Cookie" in client.get("/patients").headers
    with client.session_transaction() as sess:
        assert db.utcnow() - datetime.fromisoformat(sess["last_seen"]) < timedelta(seconds=5)


def test_patient_idle_limit_is_longer_than_staff(client, factories, login):
    patient = factories.patient(with_account=True)
    login(client, patient.user)
    with client.session_transaction() as sess:
        sess["last_seen"] = (db.utcnow() - timedelta(minutes=20)).isoformat()
    assert client.get("/me").status_code == 200


def test_form_post_without_csrf_token_is_rejected(client, factories):
    nurse = factories.nurse()
    client.send_csrf = False
    resp = client.post("/sign-in", data={"email": nurse.email, "password": PASSWORD})
    assert resp.status_code == 400
    assert b"The form expired or was not sent from this site" in resp.data


def test_api_write_without_csrf_header_is_rejected(client, factories, login):
    nurse = factories.nurse()
    login(client, nurse)
    client.send_csrf = False
    resp = client.post("/api/v1/patients", json={"given_name": "A", "family_name": "B",
                                                 "birth_date": "2000-01-01", "sex": "male"})
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    assert resp.json["type"] == "/problems/csrf-failed"


def test_security_headers_and_cookie_flags(client, factories):
    resp = client.get("/sign-in")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    nurse = factories.nurse()
    signed_in = _sign_in(client, nurse.email, PASSWORD)
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_no_inline_script_in_pages(client, factories, login):
    login(client, factories.nurse())
    for path in ("/patients", "/patients/new", "/sign-in"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>" not in html and "onclick=" not in html and 'style="' not in html


def test_next_parameter_cannot_redirect_off_site(client, factories):
    nurse = factories.nurse()
    resp = client.post("/sign-in?next=//evil.example/x", data={"email": nurse.email, "password": PASSWORD})
    assert resp.headers["Location"] == "/"


def test_sign_out_ends_the_session(client, factories, login):
    login(client, factories.nurse())
    assert client.post("/sign-out").status_code == 302
    assert client.get("/patients").status_code == 302


def test_admin_reset_forces_a_new_password(make_client, factories, login):
    admin, nurse = factories.admin(), factories.nurse()
    admin_browser = make_client()
    login(admin_browser, admin)
    assert admin_browser.put(f"/api/v1/users/{nurse.id}/password",
                             json={"password": "temporary-pass-123"}).status_code == 204
    browser = make_client()
    login(browser, nurse, password="temporary-pass-123")
    resp = browser.get("/patients")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/account/password")
    weak = browser.post("/account/password", data={"current_password": "temporary-pass-123", "new_password": "short"})
    assert weak.status_code == 422 and b"Use at least 10 characters." in weak.data
    ok = browser.post("/account/password", data={"current_password": "temporary-pass-123",
                                                 "new_password": "a much better passphrase"})
    assert ok.status_code == 302
    assert browser.get("/patients").status_code == 200


def test_consult_guests_are_listed_only_under_their_own_filter(make_client, factories, login):
    admin = factories.admin()
    factories.user(Role.GUEST, name="Interpreter Ines", facility=factories.hospital)
    factories.nurse(name="Nurse Nora")
    browser = make_client()
    login(browser, admin)
    everyone = browser.get("/admin/users").get_data(as_text=True)
    assert "Nurse Nora" in everyone and "Interpreter Ines" not in everyone
    guests = browser.get("/admin/users?role=guest").get_data(as_text=True)
    assert "Interpreter Ines" in guests and "Consult guest" in guests and "Nurse Nora" not in guests
