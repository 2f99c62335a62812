"""The pages and the JSON API, as each person uses them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.notify import service as notify
from app.notify.models import Notification
from app.pharmacy.models import Dispense
from app.prescriptions.models import Prescription
from tests.prescriptions.conftest import add_stock, drug


def _draft(client, patient_id, code="AMOX500", **kw):
    body = dict(drug_id=drug(code).id, dose_units=1, frequency_per_day=3, duration_days=7, quantity=21, refills=0,
                instructions="After meals")
    body.update(kw)
    return client.post(f"/api/v1/patients/{patient_id}/medication-requests", json=body)


@pytest.mark.smoke
def test_api_whole_loop(make_client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    account = patient.user
    pharmacist = factories.pharmacist(facility=patient.facility)
    add_stock(patient.facility_id, "AMOX500", 100)
    doc, pharm, me = make_client(), make_client(), make_client()
    login(doc, doctor), login(pharm, pharmacist), login(me, account)

    resp = _draft(doc, patient.id)
    assert resp.status_code == 201, resp.json
    rx = resp.json
    assert rx["resourceType"] == "MedicationRequest" and rx["status"] == "draft" and rx["checks"] == []
    assert rx["dosageInstruction"][0]["timing"]["repeat"]["frequency"] == 3
    signed = doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={}).json
    assert signed["status"] == "active" and signed["qrPayload"].startswith("THRX1.")

    assert pharm.post("/api/v1/prescriptions/verify", json={"payload": signed["qrPayload"]}).json["valid"] is True
    queue = pharm.get("/api/v1/pharmacy/queue").json
    assert [r["id"] for r in queue["toPrepare"]] == [rx["id"]]
    dispense = pharm.post(f"/api/v1/medication-requests/{rx['id']}/dispenses", json={}).json
    assert dispense["resourceType"] == "MedicationDispense" and dispense["status"] == "preparation"
    ready = pharm.post(f"/api/v1/medication-dispenses/{dispense['id']}/status", json={"status": "in-progress"})
    assert ready.status_code == 200 and "pickupCode" not in ready.json

    mine = me.get("/api/v1/me/medication-requests").json
    code = mine[0]["dispenses"][0]["pickupCode"]
    assert mine[0]["dispenses"][0]["status"] == "in-progress"
    assert pharm.post("/api/v1/pharmacy/pickup-lookup", json={"code": code}).json["id"] == dispense["id"]
    done = pharm.post(f"/api/v1/medication-dispenses/{dispense['id']}/handover",
                      json={"code": code, "id_document": "ID card", "receiver": "proxy", "proxy_name": "Ann Roe",
                            "proxy_relation": "daughter"})
    assert done.status_code == 200, done.json
    assert done.json["status"] == "completed" and done.json["receiver"] == [{"display": "Ann Roe (daughter)"}]
    again = pharm.post(f"/api/v1/medication-dispenses/{dispense['id']}/handover",
                       json={"code": code, "id_document": "ID card"})
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    # The doctor sees what was dispensed; the prescription is complete.
    seen = doc.get(f"/api/v1/medication-requests/{rx['id']}").json
    assert seen["status"] == "completed" and seen["dispensing"]["dispensed"] == 21
    subjects = [n.subject for n in notify.for_user(account)]
    assert "Your medicine is ready for pickup" in subjects and "Medicine collected" in subjects


@pytest.mark.parametrize("body,field", [
    ({"drug_id": 99999}, "drug_id"), ({"quantity": 0}, "quantity"), ({"quantity": -1}, "quantity"),
    ({"quantity": 100000}, "quantity"), ({"dose_units": 0}, "dose_units"), ({"quantity": "lots"}, "quantity"),
    ({"drug_id": True}, "drug_id"), ({"dose_units": "1e999"}, "dose_units"), ({"refills": [1]}, "refills"),
    ({"dispensing_facility_id": "x"}, "dispensing_facility_id"),
])
def test_api_bad_prescriptions_are_clear_errors(client, factories, login, body, field):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    login(client, doctor)
    resp = _draft(client, patient.id, **body)
    assert resp.status_code == 422 and field in resp.json["errors"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Prescription)
                             .where(Prescription.patient_id == patient.id)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "prescription.create", AuditEvent.outcome == Outcome.FAILURE,
        AuditEvent.patient_id == patient.id)) == 1


def test_api_editing_signed_prescription_is_409_and_audited(client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    login(client, doctor)
    rx = _draft(client, patient.id).json
    edited = client.put(f"/api/v1/medication-requests/{rx['id']}",
                        json=dict(drug_id=drug("AMOX500").id, dose_units=1, frequency_per_day=2, duration_days=7,
                                  quantity=14))
    assert edited.status_code == 200 and edited.json["dispenseRequest"]["quantity"]["value"] == 14
    client.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    refused = client.put(f"/api/v1/medication-requests/{rx['id']}",
                         json=dict(drug_id=drug("AMOX500").id, dose_units=1, frequency_per_day=2, duration_days=7,
                                   quantity=99))
    assert refused.status_code == 409
    assert client.get(f"/api/v1/medication-requests/{rx['id']}").json["dispenseRequest"]["quantity"]["value"] == 14
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "prescription.update", AuditEvent.outcome == Outcome.FAILURE)) == 1


def test_api_sign_reports_findings(client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, allergies=[{"substance": "Penicillin", "severity": "severe"}])
    login(client, doctor)
    rx = _draft(client, patient.id).json
    assert rx["checks"][0]["level"] == "contraindication"
    resp = client.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    assert resp.status_code == 409 and resp.json["findings"][0]["kind"] == "allergy"
    assert "Penicillin" not in resp.json["detail"]


def test_api_tampered_qr_and_forged_codes(make_client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    pharmacist = factories.pharmacist(facility=patient.facility)
    doc, client = make_client(), make_client()
    login(doc, doctor)
    rx = _draft(doc, patient.id).json
    payload = doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={}).json["qrPayload"]
    login(client, pharmacist)
    bad = client.post("/api/v1/prescriptions/verify", json={"payload": payload[:-8] + "AAAAAAAA"})
    assert bad.status_code == 422 and "payload" in bad.json["errors"]
    forged = client.post("/api/v1/pharmacy/pickup-lookup", json={"code": "ABCD-EFGH"})
    assert forged.status_code == 422 and "code" in forged.json["errors"]


def test_signing_key_endpoint(client):
    body = client.get("/api/v1/prescriptions/signing-key").json
    assert body["pem"].startswith("-----BEGIN PUBLIC KEY-----") and body["jwk"]["crv"] == "Ed25519"


def test_other_clinic_pharmacist_sees_nothing(make_client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    add_stock(patient.facility_id, "AMOX500", 100)
    own_pharmacist = factories.pharmacist(facility=patient.facility)
    other_patient_account = factories.patient(with_account=True).user
    nurse_user = factories.nurse(facility=patient.facility)
    doc = make_client()
    login(doc, doctor)
    rx = _draft(doc, patient.id).json
    doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    mine = make_client()
    login(mine, own_pharmacist)
    d = mine.post(f"/api/v1/medication-requests/{rx['id']}/dispenses", json={}).json
    stranger = make_client()
    login(stranger, factories.pharmacist(facility=factories.facility()))
    assert stranger.get("/api/v1/pharmacy/queue").json["toPrepare"] == []
    for url in (f"/api/v1/medication-requests/{rx['id']}", f"/api/v1/medication-dispenses/{d['id']}",
                f"/prescriptions/{rx['id']}", f"/pharmacy/dispenses/{d['id']}", f"/prescriptions/{rx['id']}/qr.svg",
                f"/api/v1/patients/{patient.id}/medication-requests"):
        assert stranger.get(url).status_code == 404, url
    assert stranger.post(f"/api/v1/medication-requests/{rx['id']}/dispenses", json={}).status_code == 404
    assert stranger.post(f"/api/v1/medication-dispenses/{d['id']}/status",
                         json={"status": "cancelled", "reason": "x"}).status_code == 404
    assert db.session.get(Dispense, d["id"]).status.value == "preparation"
    # Another patient sees nothing either; the patient's own clinic staff may read it.
    other = make_client()
    login(other, other_patient_account)
    assert other.get(f"/api/v1/medication-requests/{rx['id']}").status_code == 404
    assert other.get(f"/api/v1/medication-dispenses/{d['id']}").status_code == 404
    assert other.get("/api/v1/me/medication-requests").json == []
    nurse = make_client()
    login(nurse, nurse_user)
    assert nurse.get(f"/api/v1/medication-requests/{rx['id']}").status_code == 200
    assert nurse.get("/api/v1/pharmacy/queue").status_code == 403


@pytest.mark.smoke
def test_html_pages_doctor_pharmacist_patient(make_client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor, allergies=[{"substance": "ibuprofen",
                                                                              "severity": "mild"}])
    account = patient.user
    pharmacist = factories.pharmacist(facility=patient.facility)
    add_stock(patient.facility_id, "IBUP400", 5, lot="SHORT1")
    doc, pharm, me = make_client(), make_client(), make_client()
    login(doc, doctor), login(pharm, pharmacist), login(me, account)

    chart = doc.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "Prescribe" in chart and 'id="prescriptions"' in chart
    form = doc.get(f"/patients/{patient.id}/prescriptions/new")
    assert form.status_code == 200 and "Ibuprofen 400 mg tablet" in form.get_data(as_text=True)
    bad = doc.post(f"/patients/{patient.id}/prescriptions/new", data={"drug_id": "", "quantity": "0"})
    assert bad.status_code == 422 and "Choose a drug from the formulary." in bad.get_data(as_text=True)
    resp = doc.post(f"/patients/{patient.id}/prescriptions/new", data={
        "drug_id": drug("IBUP400").id, "dose_units": "1", "frequency_per_day": "3", "duration_days": "5",
        "quantity": "15", "refills": "0", "instructions": "With food"})
    assert resp.status_code == 302
    detail_url = resp.headers["Location"]
    page = doc.get(detail_url).get_data(as_text=True)
    assert "allergy to ibuprofen" in page and "override::allergy:" in page
    rx = db.session.scalar(sa.select(Prescription).where(Prescription.patient_id == patient.id))
    refused = doc.post(f"/prescriptions/{rx.id}/sign", data={}, follow_redirects=True)
    assert "Give a reason for each warning" in refused.get_data(as_text=True)
    code = service_code = [f for f in page.split('name="') if f.startswith("override::")][0].split('"')[0]
    assert service_code
    signed = doc.post(f"/prescriptions/{rx.id}/sign", data={code: "mild rash only"}, follow_redirects=True)
    assert "Prescription signed" in signed.get_data(as_text=True)
    assert doc.get(f"/prescriptions/{rx.id}/qr.svg").mimetype == "image/svg+xml"
    assert "Signed electronically" in doc.get(f"/prescriptions/{rx.id}/print").get_data(as_text=True)

    queue = pharm.get("/pharmacy").get_data(as_text=True)
    assert f'data-rx="{rx.id}"' in queue
    started = pharm.post(f"/pharmacy/prescriptions/{rx.id}/dispenses", follow_redirects=True)
    text = started.get_data(as_text=True)
    assert "Partial dispense: 5 of 15" in text and "SHORT1" in text
    d = db.session.scalar(sa.select(Dispense).where(Dispense.prescription_id == rx.id))
    pharm.post(f"/pharmacy/dispenses/{d.id}/status", data={"status": "in-progress"})
    assert "Ibuprofen" in pharm.get(f"/pharmacy/dispenses/{d.id}/label").get_data(as_text=True)

    mine = me.get("/me/prescriptions").get_data(as_text=True)
    assert "Ready for pickup" in mine and "pickup-code" in mine
    # One wording for the same supply, whoever reads it.
    same = "15 of 15 tablets still to collect, 5 of them ready or being prepared"
    assert same in mine
    assert same in doc.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert same in doc.get(detail_url).get_data(as_text=True)
    assert same in pharm.get(f"/pharmacy/dispenses/{d.id}").get_data(as_text=True)
    assert "Your medicine is ready for pickup" in mine  # the notification, also listed on the page
    pickup = mine.split('class="pickup-code mono" data-dispense="')[1].split(">")[1].split("<")[0]
    assert me.get(f"/me/dispenses/{d.id}/pickup-qr.svg").mimetype == "image/svg+xml"
    wrong = pharm.post("/pharmacy/pickup", data={"code": "2222-2222"})
    assert wrong.status_code == 422 and "No medicine is waiting here" in wrong.get_data(as_text=True)
    found = pharm.post("/pharmacy/pickup", data={"code": pickup})
    assert found.status_code == 200 and 'id="handover"' in found.get_data(as_text=True)
    missing = pharm.post(f"/pharmacy/dispenses/{d.id}/handover", data={"code": pickup, "id_document": ""})
    assert missing.status_code == 422 and "Check an ID document" in missing.get_data(as_text=True)
    ok = pharm.post(f"/pharmacy/dispenses/{d.id}/handover", data={"code": pickup, "id_document": "Passport"},
                    follow_redirects=True)
    assert "Handed over 5 units" in ok.get_data(as_text=True)
    after = me.get("/me/prescriptions").get_data(as_text=True)
    assert "Handed over" in after and "10 of 15 tablets still to collect" in after
    assert "10 of 15 tablets still to collect" in doc.get(f"/patients/{patient.id}").get_data(as_text=True)


def test_stock_page_books_in_and_rejects_nonsense(client, factories, login):
    login(client, factories.pharmacist())
    bad = client.post("/pharmacy/stock", data={"drug_id": drug("PARA500").id, "lot": "", "expires_on": "2001-01-01",
                                               "quantity": "-4"})
    assert bad.status_code == 422
    ok = client.post("/pharmacy/stock", data={"drug_id": drug("PARA500").id, "lot": "P-77", "expires_on": "2099-01-01",
                                              "quantity": "300"}, follow_redirects=True)
    assert "P-77" in ok.get_data(as_text=True)


def test_outbox_log_sender_marks_sent(app_ctx, factories, caplog):
    user = factories.doctor()
    note = notify.enqueue(recipient=user, subject="Hello", body="Body")
    db.session.commit()
    assert notify.deliver_pending({"NOTIFY_SENDER": "log"}) >= 1
    assert db.session.get(Notification, note.id).sent_at is not None


def test_verify_page(make_client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    pharmacist = factories.pharmacist(facility=patient.facility)
    doc, pharm = make_client(), make_client()
    login(doc, doctor), login(pharm, pharmacist)
    rx = _draft(doc, patient.id).json
    payload = doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={}).json["qrPayload"]
    assert "signing-key" in pharm.get("/pharmacy/verify").get_data(as_text=True)
    good = pharm.post("/pharmacy/verify", data={"payload": payload}).get_data(as_text=True)
    assert "Valid" in good and "21 of 21 units left to dispense" in good
    assert f'action="/pharmacy/prescriptions/{rx["id"]}/dispenses"' in pharm.get(f"/prescriptions/{rx['id']}").get_data(
        as_text=True)
    bad = pharm.post("/pharmacy/verify", data={"payload": payload.replace(".", ".x", 1)})
    assert bad.status_code == 422 and "Not valid" in bad.get_data(as_text=True)


def test_doctor_holds_and_resumes_from_the_page(client, factories, login):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    login(client, doctor)
    rx = _draft(client, patient.id).json
    client.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    empty = client.post(f"/prescriptions/{rx['id']}/status", data={"status": ""}, follow_redirects=True)
    assert "Choose a status." in empty.get_data(as_text=True)
    held = client.post(f"/prescriptions/{rx['id']}/status", data={"status": "on-hold", "reason": "labs pending"},
                       follow_redirects=True)
    assert "Prescription is now on-hold." in held.get_data(as_text=True)
    bad = client.post(f"/prescriptions/{rx['id']}/status", data={"status": "completed"}, follow_redirects=True)
    assert "cannot go from on-hold to completed" in bad.get_data(as_text=True)
    assert client.get(f"/api/v1/medication-requests/{rx['id']}").json["status"] == "on-hold"


def test_a_draft_cannot_be_made_active_without_signing(client, factories, login):
    """Activating a draft through the status endpoint would skip the safety checks and the signature."""
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    login(client, doctor)
    rx = _draft(client, patient.id).json
    resp = client.post(f"/api/v1/medication-requests/{rx['id']}/status", json={"status": "active"})
    assert resp.status_code == 409 and "only by signing" in resp.json["detail"]
    page = client.post(f"/prescriptions/{rx['id']}/status", data={"status": "active"}, follow_redirects=True)
    assert "only by signing" in page.get_data(as_text=True)
    assert client.get(f"/api/v1/medication-requests/{rx['id']}").json["status"] == "draft"


@pytest.mark.parametrize("quantity", ["many", 0, -1, 22, 1.5, True, 10**12])
def test_api_bad_dispense_quantity(make_client, factories, login, quantity):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    pharmacist = factories.pharmacist(facility=patient.facility)
    add_stock(patient.facility_id, "AMOX500", 100)
    doc, pharm = make_client(), make_client()
    login(doc, doctor), login(pharm, pharmacist)
    rx = _draft(doc, patient.id).json
    doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    resp = pharm.post(f"/api/v1/medication-requests/{rx['id']}/dispenses", json={"quantity": quantity})
    assert resp.status_code == 422 and "quantity" in resp.json["errors"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Dispense)
                             .where(Dispense.prescription_id == int(rx["id"]))) == 0
    assert pharm.get("/api/v1/pharmacy/stock").json[0]["quantity"] == 100
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "dispense.create", AuditEvent.outcome == Outcome.FAILURE,
        AuditEvent.patient_id == patient.id)) == 1


def test_api_stock_bad_input(client, factories, login):
    login(client, factories.pharmacist())
    resp = client.post("/api/v1/pharmacy/stock", json={"drug_id": "x", "lot": "L1", "expires_on": "2099-01-01",
                                                       "quantity": -5})
    assert resp.status_code == 422 and set(resp.json["errors"]) == {"drug_id", "quantity"}
    assert client.get("/api/v1/pharmacy/stock").json == []


def test_third_party_app_never_receives_the_pickup_code(make_client, factories, login, bearer_for):
    """The pickup code proves the patient's identity at the counter: an app with prescription scope lacks it."""
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    account = patient.user
    pharmacist = factories.pharmacist(facility=patient.facility)
    add_stock(patient.facility_id, "AMOX500", 100)
    token = bearer_for(account, "patient/MedicationRequest.rs")
    doc, pharm, me, app_client = make_client(), make_client(), make_client(), make_client()
    login(doc, doctor), login(pharm, pharmacist), login(me, account)
    rx = _draft(doc, patient.id).json
    doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    dispense = pharm.post(f"/api/v1/medication-requests/{rx['id']}/dispenses", json={}).json
    pharm.post(f"/api/v1/medication-dispenses/{dispense['id']}/status", json={"status": "in-progress"})
    assert me.get("/api/v1/me/medication-requests").json[0]["dispenses"][0]["pickupCode"]

    seen = app_client.get("/api/v1/me/medication-requests", headers={"Authorization": f"Bearer {token}"})
    assert seen.status_code == 200
    assert seen.json[0]["dispenses"][0]["status"] == "in-progress"
    assert "pickupCode" not in seen.json[0]["dispenses"][0]
