"""Words that come from data (statuses, kinds, priorities, severities, weekdays) inside Chinese sentences read
Chinese too, and a notification names them in its recipient's language, not in that of whoever caused it."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from flask_babel import force_locale

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import scopes
from app.notify.models import Notification
from app.patients import service as patients
from app.pharmacy import service as pharmacy
from app.pharmacy.models import DispenseStatus
from app.prescriptions.models import Prescription
from app.reading import service as reading
from app.reading.models import ReadingRequest, ReadingStatus
from tests.consults.helpers import admitted_consult
from tests.prescriptions.conftest import add_stock, drug
from tests.reading.conftest import enrol, next_code, store_study

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
ZH_JSON = {**ZH, "Accept": "application/json"}


def _text(resp: Any) -> str:
    return resp.get_data(as_text=True)


def _signed(doc: Any, patient_id: int) -> dict[str, Any]:
    rx = doc.post(f"/api/v1/patients/{patient_id}/medication-requests", json={
        "drug_id": drug("AMOX500").id, "dose_units": 1, "frequency_per_day": 3, "duration_days": 7,
        "quantity": 21, "refills": 0, "instructions": "After meals"}).json
    return {**rx, **doc.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={}).json}


def _doctor_and_pharmacist(make_client: Any, factories: Any, login: Any) -> tuple[Any, Any, Any, Any]:
    """A patient in a doctor's care, their clinic's pharmacist, and both signed in: (patient, pharmacist, the
    doctor's client, the pharmacist's client)."""
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    pharmacist = factories.pharmacist(facility=patient.facility)
    doc, pharm = make_client(), make_client()
    login(doc, doctor), login(pharm, pharmacist)
    return patient, pharmacist, doc, pharm


def test_the_pharmacists_code_check_names_the_status_in_chinese(make_client: Any, factories: Any,
                                                                  login: Any) -> None:
    patient, pharmacist, doc, pharm = _doctor_and_pharmacist(make_client, factories, login)
    payload = _signed(doc, patient.id)["qrPayload"]
    page = _text(pharm.post("/pharmacy/verify", data={"payload": payload}, headers=ZH))
    assert "处方状态：有效。" in page and "共 21 个单位，尚余 21 个可发放。" in page and "由本院密钥签名。" in page
    assert "Prescription is active" not in page and "units left" not in page
    english = _text(pharm.post("/pharmacy/verify", data={"payload": payload}))
    assert "Prescription is active." in english and "21 of 21 units left to dispense." in english


def test_a_refused_dispense_move_names_both_states_in_chinese(make_client: Any, factories: Any, login: Any) -> None:
    patient, pharmacist, doc, pharm = _doctor_and_pharmacist(make_client, factories, login)
    rx_id = _signed(doc, patient.id)["id"]
    add_stock(patient.facility_id, "AMOX500", 100)
    dispense = pharmacy.start_dispense(db.session.get(Prescription, rx_id), by=pharmacist)
    dispense.status = DispenseStatus.ON_HOLD
    db.session.commit()
    resp = pharm.post(f"/api/v1/medication-dispenses/{dispense.id}/status", json={"status": "in-progress"},
                      headers=ZH_JSON)
    assert resp.status_code == 409 and resp.get_json()["detail"] == "发药状态不能从“暂停”变为“待取药”。"
    english = pharm.post(f"/api/v1/medication-dispenses/{dispense.id}/status", json={"status": "in-progress"})
    assert english.get_json()["detail"] == "A dispense cannot go from on hold to ready for pickup."


def test_an_invited_interpreter_reads_their_role_in_chinese(app: Any, make_client: Any, factories: Any,
                                                            login: Any) -> None:
    doctor, _patient, appt = admitted_consult(factories, app)
    doc = make_client()
    login(doc, doctor)
    link = doc.post(f"/api/v1/consults/appointments/{appt.id}/invite-links",
                    json={"kind": "interpreter", "display_name": "Ana"}).json["url"]
    page = _text(make_client().get("/" + link.split("://", 1)[1].split("/", 1)[1], headers=ZH))
    assert "您以 <strong>Ana</strong>（翻译）的身份受邀。此链接仅能使用一次" in page and "interpreter" not in page
    english = _text(make_client().get("/" + link.split("://", 1)[1].split("/", 1)[1]))
    assert "You were invited as <strong>Ana</strong> (Interpreter). This link works once" in english


def test_a_doctor_sets_availability_with_weekdays_in_chinese(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.doctor())
    page = _text(client.get("/consults/availability", headers=ZH))
    days = re.findall(r'<option value="(\d)">([^<]+)</option>', page)
    assert days[:7] == [(str(i), d) for i, d in enumerate(["星期一", "星期二", "星期三", "星期四", "星期五",
                                                           "星期六", "星期日"])]
    assert "Monday" not in page
    assert '<option value="6">Sunday</option>' in _text(client.get("/consults/availability"))


def test_a_chinese_speaking_patient_reads_allergy_severity_and_status_in_chinese(client: Any, factories: Any,
                                                                                login: Any) -> None:
    patient = factories.patient(with_account=True)
    nurse = factories.nurse(facility=patient.facility)
    patients.add_allergy(patient, by=nurse, substance="Penicillin", severity="severe", reaction="Hives")
    db.session.commit()
    login(client, patient.user)
    page = _text(client.get("/me", headers=ZH))
    assert re.search(r'<span class="badge sev-severe">重度</span>\s*<strong>Penicillin</strong>', page)
    assert ">severe<" not in page


def test_a_reading_request_names_its_priority_in_the_doctors_language(app_ctx: Any, factories: Any) -> None:
    """A nurse working in Chinese sends an urgent scan to a doctor who reads English, and the reverse."""
    nurse, doctor, zh_doctor = factories.nurse(), factories.doctor(), factories.doctor()
    zh_doctor.locale = "zh_Hans"
    study = store_study(nurse, factories.patient(facility=nurse.facility))
    with force_locale("zh_Hans"):
        reading.request_reading(study, by=nurse, question="Cough?", priority="urgent", assigned_to_id=doctor.id)
    with force_locale("en"):
        reading.request_reading(study, by=nurse, question="Cough?", priority="urgent", assigned_to_id=zh_doctor.id)
    db.session.flush()
    subjects = {n.recipient_id: n.subject for n in db.session.scalars(sa.select(Notification).where(
        Notification.recipient_id.in_([doctor.id, zh_doctor.id])))}
    assert subjects == {doctor.id: "Urgent scan to read", zh_doctor.id: "待阅片：加急 影像"}


def test_a_chinese_speaking_doctor_signs_a_report_with_the_editors_sign_button(make_client: Any, factories: Any,
                                                                               login: Any, app: Any) -> None:
    """What a button sends is the same in every language: signing from the Chinese editor signs, not saves."""
    with app.test_request_context("/"):
        nurse, doctor = factories.nurse(), factories.doctor()
        study = store_study(nurse, factories.patient(facility=nurse.facility))
        req = reading.request_reading(study, by=nurse, question="Cough?", priority="routine", assigned_to_id=None)
        db.session.commit()
        request_id = req.id
    browser = make_client()
    login(browser, doctor)
    with app.test_request_context("/"):
        totp = enrol(doctor)
    assert browser.post(f"/reading/{request_id}/claim", data={"from": "worklist"}).status_code == 302
    editor = _text(browser.get(f"/reading/{request_id}", headers=ZH))
    sign = re.search(r'<button type="submit" name="action" value="([^"]*)" class="primary" id="sign-report">', editor)
    assert sign and "签" in editor[sign.end():sign.end() + 20]
    browser.post(f"/reading/{request_id}/report", headers=ZH, data={
        "findings": "Clear.", "impression": "1. Normal.", "patient_summary": "All clear.", "key_images": "[]",
        "action": sign.group(1), "code": next_code(totp), "release": "now"})
    db.session.expire_all()
    assert db.session.get(ReadingRequest, request_id).status is ReadingStatus.FINAL


def test_what_an_app_asks_for_is_described_in_the_readers_language(app: Any) -> None:
    with app.test_request_context("/", headers=ZH):
        assert scopes.describe("patient/AllergyIntolerance.rs") == "读取和检索过敏记录（仅限您本人的病历）"
        assert scopes.describe("user/*.cruds") == "创建、读取、更新、删除和检索您在医院中有权查看的所有数据"
        assert scopes.describe("offline_access") == "关闭应用后仍保留访问权限，直至您撤销"
    with app.test_request_context("/"):
        assert scopes.describe("patient/AllergyIntolerance.rs") == "Read, search allergies in your own record only"
        assert scopes.describe("user/*.cruds") == "Create, read, update, delete, search all data that you can see " \
            "in the hospital"


def test_an_admin_reads_outcomes_and_facility_kinds_in_chinese(client: Any, factories: Any, login: Any) -> None:
    admin = factories.admin()
    login(client, admin)
    audit.record("imaging.frames.read", by=admin, outcome=Outcome.DENIED)  # a refusal on the trail
    db.session.flush()
    trail = _text(client.get("/admin/audit", headers=ZH))
    assert ">拒绝</span>" in trail and ">成功</option>" in trail
    assert not re.search(r'class="badge out-\w+">(success|denied|failure)<', trail)
    factories.facility()
    places = _text(client.get("/admin/facilities", headers=ZH))
    assert re.search(r'<span class="muted small">(医院|诊所)</span>', places)
    assert not re.search(r'<span class="muted small">(hospital|clinic)</span>', places)
