"""The request boundary commits (``app.transactions``): a request whose commit fails is never answered as a
success, and nothing of it stays."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from app import db
from app.pharmacy.models import StockBatch
from app.prescriptions.models import Drug


@pytest.fixture
def commits_fail(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[[], AbstractContextManager[None]]:
    """Within ``with commits_fail():`` every commit fails as a lost connection would, and the error page answers
    as in production."""

    @contextlib.contextmanager
    def failing() -> Iterator[None]:
        def lost() -> None:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost"))

        with monkeypatch.context() as patch:
            patch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
            patch.setattr(db.session, "commit", lost)
            yield

    return failing


def test_a_failed_commit_at_the_request_boundary_is_not_answered_as_success(app, client, factories, login,
                                                                          commits_fail):
    pharmacist = factories.pharmacist()
    login(client, pharmacist)
    drug_id = db.session.scalar(sa.select(Drug.id).limit(1))
    # The token is fetched first: the accounts API, which hands it out, commits at the request boundary too.
    token = client.get("/api/v1/auth/csrf").get_json()["csrf_token"]
    with commits_fail():
        resp = client.post("/api/v1/pharmacy/stock", headers={"X-CSRFToken": token}, json={
            "drug_id": drug_id, "lot": "LOT-BOUNDARY", "expires_on": (date.today() + timedelta(days=300)).isoformat(),
            "quantity": 10})
    # The database going away at the request's end is told like anywhere else: try again, nothing was saved.
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.mimetype == "application/problem+json" and "Nothing was saved" in resp.get_json()["detail"]
    assert db.session.scalar(sa.select(StockBatch).where(StockBatch.lot == "LOT-BOUNDARY")) is None


def _database_gone(*_args: object, **_kwargs: object) -> None:
    raise sa.exc.OperationalError("SELECT", {}, Exception("connection lost"))


def test_when_the_database_goes_away_the_page_is_answered_as_to_a_signed_out_visitor(app, client, factories,
                                                                                     login, monkeypatch):
    from app.auth import service as accounts
    from app.patients import service as patients

    nurse = factories.nurse()
    name = nurse.full_name
    login(client, nurse)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)  # as in production: the error page answers
    monkeypatch.setattr(patients, "search", _database_gone)  # the account was loaded; the page's query fails
    midway = client.get("/patients")
    monkeypatch.setattr(accounts, "load_session_user", _database_gone)  # loading the account itself fails
    at_once = client.get("/patients")
    for resp in (midway, at_once):
        page = resp.get_data(as_text=True)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
        assert "Try again in a few seconds" in page and name not in page


def test_patient_and_caregiver_pages_commit_at_the_boundary_and_never_claim_a_failed_save(app, make_client,
                                                                                         factories, login,
                                                                                         commits_fail):
    """A clinic's demographics edit and a patient's new caregiver: saved when the commit succeeds, and when it
    fails the person gets the error page, not the redirect that says it was saved, and nothing stays."""
    from app.auth.models import Role
    from app.patients.models import CaregiverLink, Patient

    patient = factories.patient(with_account=True, phone="+86 100 0000 0000")
    pid, account = patient.id, patient.user
    fields = {"given_name": patient.given_name, "family_name": patient.family_name,
              "birth_date": patient.birth_date.isoformat(), "sex": patient.sex.value}
    nurse = factories.nurse(facility=patient.facility)
    helper_email = factories.user(Role.PATIENT, name="Helper Daughter").email
    staff, own = make_client(), make_client()
    login(staff, nurse)
    login(own, account)
    # The tokens are fetched first: the accounts API, which hands them out, commits at the request boundary too.
    staff_token, own_token = (c.get("/api/v1/auth/csrf").get_json()["csrf_token"] for c in (staff, own))

    def edit(phone: str):  # type: ignore[no-untyped-def]
        return staff.post(f"/patients/{pid}/edit", headers={"X-CSRFToken": staff_token},
                          data={**fields, "phone": phone})

    def link():  # type: ignore[no-untyped-def]
        return own.post("/me/caregivers", headers={"X-CSRFToken": own_token},
                        data={"cg-caregiver_email": helper_email, "cg-relationship": "child", "cg-rights": ["record"]})

    with commits_fail():
        failed_edit, failed_link = edit("+86 199 9999 9999"), link()
    assert failed_edit.status_code >= 500 and failed_link.status_code >= 500
    assert "Details saved" not in staff.get(f"/patients/{pid}").get_data(as_text=True)  # nor on the next page
    assert "Caregiver added" not in own.get("/me/caregivers").get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Patient, pid).phone == "+86 100 0000 0000"
    assert db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.patient_id == pid)) is None

    assert edit("+86 199 9999 9999").status_code == 302 and link().status_code == 302
    db.session.expire_all()
    assert db.session.get(Patient, pid).phone == "+86 199 9999 9999"
    assert db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.patient_id == pid)) is not None


def test_a_language_switch_whose_save_fails_is_not_answered_as_done(app, client, factories, login, commits_fail):
    from app.auth.models import User

    patient = factories.patient(with_account=True)
    login(client, patient.user)
    token = client.get("/api/v1/auth/csrf").get_json()["csrf_token"]
    with commits_fail():
        resp = client.post("/language", headers={"X-CSRFToken": token}, data={"locale": "zh_Hans", "next": "/me"})
    assert resp.status_code >= 500 and "Location" not in resp.headers
    db.session.expire_all()
    assert db.session.get(User, patient.user.id).locale != "zh_Hans"
