"""The reading pages and API as people use them: send from the chart, the worklist, the editor beside the
viewer, signing with a code, the patient's My health."""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa

from app import db
from app.reading.models import ReadingRequest, ReadingStatus
from tests.reading.conftest import enrol, next_code, store_study


def _setup(factories: Any, app: Any) -> dict[str, Any]:
    with app.test_request_context("/"):
        nurse = factories.nurse()
        doctor = factories.doctor(name="Dr Ada Reader")
        patient = factories.patient(with_account=True, given_name="Maria", family_name="Lopez")
        study = store_study(nurse, patient)
        return {"nurse": nurse, "doctor": doctor, "patient": patient, "patient_user": patient.user,
                "study_uid": study.study_instance_uid}


def test_nurse_sends_from_chart_doctor_claims_writes_and_signs(make_client: Any, factories: Any, login: Any,
                                                               app: Any) -> None:
    env = _setup(factories, app)
    nurse_browser, doctor_browser = make_client(), make_client()
    login(nurse_browser, env["nurse"])
    chart = nurse_browser.get(f"/patients/{env['patient'].id}").get_data(as_text=True)
    assert f"/reading/new/{env['study_uid']}" in chart and "Send to be read" in chart
    bad = nurse_browser.post(f"/reading/new/{env['study_uid']}", data={"question": "", "priority": "urgent"})
    assert bad.status_code == 422 and "Write the clinical question" in bad.get_data(as_text=True)
    sent = nurse_browser.post(f"/reading/new/{env['study_uid']}",
                              data={"question": "Cough 3 weeks, smoker", "priority": "urgent", "assigned_to_id": ""})
    assert sent.status_code == 302
    req = db.session.scalar(sa.select(ReadingRequest).order_by(ReadingRequest.id.desc()))
    assert req is not None and req.status is ReadingStatus.REQUESTED
    request_id = req.id

    login(doctor_browser, env["doctor"])
    with app.test_request_context("/"):
        totp = enrol(env["doctor"])  # after signing in: the report is signed with a fresh code
    page = doctor_browser.get("/reading").get_data(as_text=True)
    assert "Reading worklist" in page and "Urgent" in page and "Pool:" in page and "LOPEZ" not in page
    assert doctor_browser.post(f"/reading/{req.id}/claim", data={"from": "worklist"}).status_code == 302
    editor = doctor_browser.get(f"/reading/{req.id}").get_data(as_text=True)
    assert 'id="viewer"' in editor and 'id="report-editor"' in editor and "Lungs and airways" in editor
    assert "LOPEZ, Maria" in editor
    saved = doctor_browser.post(f"/reading/{req.id}/report", data={
        "findings": "Nodule 2 cm.", "impression": "1. Nodule.", "patient_summary": "A small spot.",
        "key_images": "[]", "action": "save"})
    assert saved.status_code == 302
    wrong = doctor_browser.post(f"/reading/{req.id}/report", data={
        "findings": "Nodule 2.5 cm.", "impression": "1. Nodule.", "action": "sign", "code": "123456"},
        follow_redirects=True)
    assert "That code is not correct." in wrong.get_data(as_text=True)
    assert "Nodule 2.5 cm." in wrong.get_data(as_text=True)  # what was typed is kept as preliminary
    signed = doctor_browser.post(f"/reading/{req.id}/report", data={
        "findings": "Nodule 2 cm.", "impression": "1. Nodule.", "patient_summary": "A small spot.",
        "action": "sign", "code": next_code(totp), "critical": "on", "release": "now"},
        follow_redirects=True)
    body = signed.get_data(as_text=True)
    assert "Report signed." in body and "Critical result" in body
    req = db.session.get(ReadingRequest, request_id)
    assert req is not None and req.status is ReadingStatus.FINAL
    assert req.report is not None and req.report.dicom_sop_instance_uid  # written back into the study
    pdf = doctor_browser.get(f"/reading/{req.id}/report.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    printout = doctor_browser.get(f"/reading/{req.id}/print").get_data(as_text=True)
    assert "Signed electronically by Dr Ada Reader on " in printout and " UTC" in printout
    assert doctor_browser.get(f"/reading/{req.id}/qr.svg").mimetype == "image/svg+xml"

    clinic = nurse_browser.get("/reading/requests").get_data(as_text=True)
    assert "Critical: acknowledge" in clinic
    acked = nurse_browser.post(f"/reading/{req.id}/acknowledge", follow_redirects=True).get_data(as_text=True)
    assert f"Critical result acknowledged by {env['nurse'].full_name}" in acked

    patient_browser = make_client()
    login(patient_browser, env["patient_user"])
    health = patient_browser.get("/me").get_data(as_text=True)
    assert "A small spot." in health and "Scan results" in health
    assert health.index("A small spot.") < health.index("Nodule 2 cm.")  # the plain words come first
    log = patient_browser.get("/me/access-log").get_data(as_text=True)
    assert "reading.report.sign" in log or "Dr Ada Reader" in log


def test_worklist_empty_state_and_refusals(make_client: Any, factories: Any, login: Any, app: Any) -> None:
    doctor, pharmacist = factories.doctor(), factories.pharmacist()
    browser = make_client()
    login(browser, doctor)
    page = browser.get("/reading").get_data(as_text=True)
    assert "Nothing waits to be read" in page
    other = make_client()
    login(other, pharmacist)
    assert other.get("/reading").status_code == 403
    assert other.get("/api/v1/reading-requests").status_code == 403


def test_api_claim_conflict_names_the_holder(make_client: Any, factories: Any, login: Any, app: Any) -> None:
    env = _setup(factories, app)
    nurse_api, first, second = make_client(), make_client(), make_client()
    login(nurse_api, env["nurse"])
    created = nurse_api.post("/api/v1/reading-requests", json={
        "study_instance_uid": env["study_uid"], "question": "Fracture?", "priority": "stat"})
    assert created.status_code == 201, created.get_json()
    rid = int(created.get_json()["id"])
    assert created.get_json()["resourceType"] == "ServiceRequest"
    login(first, env["doctor"])
    other_doctor = factories.doctor(name="Dr Late")
    login(second, other_doctor)
    listed = second.get("/api/v1/reading-requests").get_json()
    assert [r["id"] for r in listed] == [str(rid)]
    assert first.post(f"/api/v1/reading-requests/{rid}/claim").status_code == 200
    late = second.post(f"/api/v1/reading-requests/{rid}/claim")
    assert late.status_code == 409 and late.mimetype == "application/problem+json"
    assert late.get_json()["detail"].startswith("Dr Ada Reader took this request at ")
    assert late.get_json()["claimed_by"] == "Dr Ada Reader"


def test_api_report_lifecycle_as_fhir(make_client: Any, factories: Any, login: Any, app: Any) -> None:
    env = _setup(factories, app)
    nurse_api, doctor_api = make_client(), make_client()
    login(nurse_api, env["nurse"])
    rid = int(nurse_api.post("/api/v1/reading-requests", json={
        "study_instance_uid": env["study_uid"], "question": "Mass?", "priority": "routine",
        "assigned_to_id": env["doctor"].id}).get_json()["id"])
    login(doctor_api, env["doctor"])
    with app.test_request_context("/"):
        totp = enrol(env["doctor"])
    assert doctor_api.get(f"/api/v1/reading-requests/{rid}/report").status_code == 404  # nothing written yet
    assert doctor_api.put(f"/api/v1/reading-requests/{rid}/report", json={"findings": "x"}).status_code == 404
    assert doctor_api.post(f"/api/v1/reading-requests/{rid}/claim").status_code == 200
    draft = doctor_api.put(f"/api/v1/reading-requests/{rid}/report",
                           json={"findings": "Clear lungs.", "impression": "1. Normal chest."})
    assert draft.status_code == 200 and draft.get_json()["status"] == "preliminary"
    no_code = doctor_api.post(f"/api/v1/reading-requests/{rid}/report/sign", json={})
    assert no_code.status_code == 422 and "code" in no_code.get_json()["errors"]
    held = doctor_api.post(f"/api/v1/reading-requests/{rid}/report/sign",
                           json={"code": next_code(totp), "release": "after-consult"})
    assert held.status_code == 422 and "release_appointment_id" in held.get_json()["errors"]
    signed = doctor_api.post(f"/api/v1/reading-requests/{rid}/report/sign", json={"code": next_code(totp)})
    assert signed.status_code == 200, signed.get_json()
    report = signed.get_json()
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "final"
    assert report["basedOn"][0]["reference"] == f"ServiceRequest/{rid}"
    again = doctor_api.put(f"/api/v1/reading-requests/{rid}/report", json={"findings": "changed"})
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    viewer = doctor_api.get(f"/scans/studies/{env['study_uid']}").get_data(as_text=True)
    # in the study, listed as a PDF document the viewer shows in a frame, not as an image slice
    assert "Modality CT, DOC" in viewer and '<span class="series-doc">PDF</span>' in viewer
    assert '"kind": "pdf"' in viewer and "/document" in viewer
    assert nurse_api.get(f"/api/v1/reading-requests/{rid}/report").get_json()["conclusion"] == "1. Normal chest."
    metadata = nurse_api.get(f"/dicomweb/studies/{env['study_uid']}/metadata",
                             headers={"Accept": "application/dicom+json"})
    assert metadata.status_code == 200  # what OHIF asks for, with the report object in the study
    assert any(m["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.104.1"] for m in metadata.get_json())


def test_doctor_without_authenticator_cannot_sign_where_one_is_required(loop: Any, app: Any) -> None:
    from app.errors import Conflict
    from app.reading import service

    doctor = loop.other_doctor
    req = loop.request(assigned_to_id=doctor.id)
    service.claim(req, by=doctor)
    app.config["MFA_REQUIRED_ROLES"] = ("doctor",)
    try:
        try:
            service.sign(req, by=doctor, code=None,
                         data=service.ReportInput(findings="Normal.", impression="1. Normal."))
        except Conflict as exc:
            assert "two-step sign-in" in exc.detail
        else:
            raise AssertionError("signed without a second factor")
    finally:
        app.config["MFA_REQUIRED_ROLES"] = ()


def test_bad_input_gets_a_clear_answer_never_a_500(make_client: Any, factories: Any, login: Any, app: Any) -> None:
    env = _setup(factories, app)
    nurse, doctor = make_client(), make_client()
    login(nurse, env["nurse"])
    login(doctor, env["doctor"])
    nul = nurse.post("/api/v1/reading-requests", json={"study_instance_uid": env["study_uid"],
                                                         "question": "Mass\x00?", "priority": "stat"})
    assert nul.status_code == 422 and "question" in nul.get_json()["errors"]
    assert nurse.post("/api/v1/reading-requests", json={"study_instance_uid": env["study_uid"], "question": "Q",
                                                        "priority": "stat", "assigned_to_id": "x"}).status_code == 422
    assert nurse.post("/api/v1/reading-requests", json={"study_instance_uid": "1.2.3", "question": "Q",
                                                        "priority": "stat"}).status_code == 404
    rid = int(nurse.post("/api/v1/reading-requests", json={"study_instance_uid": env["study_uid"], "question": "Q",
                                                           "priority": "stat"}).get_json()["id"])
    assert doctor.post(f"/api/v1/reading-requests/{rid}/claim").status_code == 200
    for body in ({"findings": "a\x00b"}, {"key_images": [{"series": 1}]}, {"key_images": [{}] * 60},
                 {"findings": "x" * 20_001}):
        resp = doctor.put(f"/api/v1/reading-requests/{rid}/report", json=body)
        assert resp.status_code == 422, (body, resp.status_code)
    form = doctor.post(f"/reading/{rid}/report", data={"findings": "ok", "key_images": "not json", "action": "save"},
                       follow_redirects=True)
    assert form.status_code == 200 and "key image" in form.get_data(as_text=True)
    assert doctor.get("/reading?facility=abc&status=lost").status_code == 200
    nothing = doctor.post(f"/api/v1/reading-requests/{rid}/report/sign", json={})
    assert nothing.status_code == 409 and nothing.get_json()["detail"] == "Write the report before signing it."
    assert doctor.put(f"/api/v1/reading-requests/{rid}/report",
                      json={"findings": "Fine.", "impression": "1. Fine."}).status_code == 200
    assert doctor.post(f"/api/v1/reading-requests/{rid}/report/sign",
                       json={"release": "someday"}).status_code == 422


def test_waiting_clocks_and_key_image_words_follow_the_readers_language(make_client: Any, factories: Any,
                                                                        login: Any, app: Any) -> None:
    env = _setup(factories, app)
    nurse_browser, doctor_browser = make_client(), make_client()
    login(nurse_browser, env["nurse"])
    sent = nurse_browser.post(f"/reading/new/{env['study_uid']}",
                              data={"question": "Cough", "priority": "urgent", "assigned_to_id": ""})
    assert sent.status_code == 302
    login(doctor_browser, env["doctor"])
    page = doctor_browser.get("/reading", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert '<span class="clock"' in page and " 分钟</span>" in page and " min</span>" not in page
    # reading.js keeps the clocks ticking and lists key images with the page's words, not English ones
    words = json.loads(re.search(r'<script type="application/json" id="reading-text">(.*?)</script>', page, re.S)[1])
    assert words["minutes"] == "{m} 分钟" and words["keyImage"] == "第 {n} 张图像（第 {f} 帧）"
