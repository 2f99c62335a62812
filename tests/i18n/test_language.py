"""Pages, errors, notifications and printouts in the reader's language: a Chinese browser reads Chinese, the
switcher changes it and the choice sticks to the account, English stays the default."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app import db
from app.auth.models import User
from app.consults import service as consults
from app.notify.models import Notification
from tests.consults.helpers import admitted_consult, next_slot_start, open_all_week

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}


def _text(resp: Any) -> str:
    return resp.get_data(as_text=True)


def test_a_chinese_browser_reads_the_sign_in_page_in_chinese(client: Any) -> None:
    page = _text(client.get("/sign-in", headers=ZH))
    assert '<html lang="zh-Hans">' in page
    assert "<h1>登录</h1>" in page and "电子邮箱" in page and "密码" in page
    english = _text(client.get("/sign-in", headers={"Accept-Language": "en-US,en;q=0.9"}))
    assert '<html lang="en">' in english and "<h1>Sign in</h1>" in english


def test_a_chinese_browser_reads_the_patient_home_and_booking_in_chinese(client: Any, factories: Any,
                                                                         login: Any) -> None:
    patient = factories.patient(with_account=True)
    doctor = factories.doctor(name="Dr Lin")
    open_all_week(doctor)
    db.session.commit()
    login(client, patient.user)
    home = _text(client.get("/me", headers=ZH))
    assert "<h1>我的健康</h1>" in home and "My health" not in home
    book = _text(client.get(f"/consults/book?doctor_id={doctor.id}", headers=ZH))
    assert "预约视频问诊" in book and "显示可预约时间" in book
    assert "Book a video consult" not in book


def test_the_switcher_changes_the_language_and_it_sticks_to_the_account(client: Any, make_client: Any,
                                                                       factories: Any, login: Any) -> None:
    patient = factories.patient(with_account=True)
    login(client, patient.user)
    assert "<h1>My health</h1>" in _text(client.get("/me"))  # no preference, an English browser
    switched = client.post("/language", data={"locale": "zh_Hans", "next": "/me?tab=1"})
    assert switched.status_code == 303 and switched.headers["Location"] == "/me?tab=1"
    page = _text(client.get("/me"))
    assert '<html lang="zh-Hans">' in page and "<h1>我的健康</h1>" in page
    assert db.session.get(User, patient.user.id).locale == "zh_Hans"
    # the account keeps it: another browser that asks for English still gets Chinese after signing in
    other = make_client()
    login(other, patient.user)
    assert "<h1>我的健康</h1>" in _text(other.get("/me", headers={"Accept-Language": "en-US"}))
    # and back
    other.post("/language", data={"locale": "en", "next": "/me"})
    assert "<h1>My health</h1>" in _text(other.get("/me"))


def test_the_switcher_works_signed_out_and_never_leaves_the_site(client: Any) -> None:
    resp = client.post("/language", data={"locale": "zh_Hans", "next": "//evil.example/x"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    assert "<h1>登录</h1>" in _text(client.get("/sign-in"))
    assert client.post("/language", data={"locale": "xx"}).status_code == 303
    assert "<h1>登录</h1>" in _text(client.get("/sign-in"))  # an unknown language changes nothing


def test_the_switcher_needs_the_csrf_token(client: Any) -> None:
    client.send_csrf = False
    assert client.post("/language", data={"locale": "zh_Hans"}).status_code == 400


def test_every_page_has_the_switcher(client: Any, factories: Any, login: Any) -> None:
    page = _text(client.get("/sign-in"))
    assert 'action="/language"' in page and 'name="locale" value="zh_Hans"' in page and "简体中文" in page
    login(client, factories.patient(with_account=True).user)
    page = _text(client.get("/me", headers=ZH))
    assert 'action="/language"' in page and 'name="locale" value="en"' in page and 'value="English"' in page


def test_a_problem_json_title_is_in_the_readers_language(client: Any) -> None:
    resp = client.get("/api/v1/consults/appointments", headers={**ZH, "Accept": "application/json"})
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == 401 and body["title"] == "需要登录"
    english = client.get("/api/v1/consults/appointments", headers={"Accept": "application/json"}).get_json()
    assert english["title"] == "Sign-in required" and english["type"] == body["type"]


def test_a_chinese_speaking_patient_is_notified_in_chinese(app_ctx: Any, factories: Any) -> None:
    doctor, nurse = factories.doctor(), factories.nurse()
    patient = factories.patient(with_account=True)
    patient.user.locale = "zh_Hans"
    open_all_week(doctor)
    appt = consults.book(patient=patient, doctor_id=doctor.id, start=next_slot_start(skip=3), by=nurse)
    db.session.flush()
    to_patient = db.session.scalars(sa.select(Notification).where(Notification.recipient_id == patient.user.id)).one()
    assert to_patient.subject == "视频问诊已预约"
    assert to_patient.body.startswith(f"您与 {doctor.full_name} 医生的视频问诊时间为") and "签到" in to_patient.body
    to_doctor = db.session.scalars(sa.select(Notification).where(Notification.recipient_id == doctor.id)).one()
    assert to_doctor.subject == "Video consult booked" and f"Appointment #{appt.id}." in to_doctor.body


def test_a_patient_without_a_setting_is_notified_in_their_facilitys_language(app_ctx: Any, factories: Any) -> None:
    clinic = factories.facility(name="Town clinic zh")
    clinic.default_locale = "zh_Hans"
    doctor, nurse = factories.doctor(), factories.nurse(facility=clinic)
    patient = factories.patient(with_account=True, facility=clinic)
    patient.user.facility = clinic
    open_all_week(doctor)
    consults.book(patient=patient, doctor_id=doctor.id, start=next_slot_start(skip=4), by=nurse)
    db.session.flush()
    db.session.expire_all()
    subject = db.session.scalars(sa.select(Notification.subject)
                                 .where(Notification.recipient_id == patient.user.id)).one()
    assert subject == "视频问诊已预约"


def test_a_service_error_is_explained_in_chinese_in_problem_json(client: Any, factories: Any, login: Any) -> None:
    me, other = factories.patient(with_account=True), factories.patient()
    db.session.commit()
    login(client, me.user)
    resp = client.get(f"/api/v1/patients/{other.id}", headers={**ZH, "Accept": "application/json"})
    body = resp.get_json()
    assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/problem+json"
    assert body["title"] == "未找到" and body["detail"] == "找不到该 ID 的患者，或您无权访问。"
    english = client.get(f"/api/v1/patients/{other.id}", headers={"Accept": "application/json"}).get_json()
    assert english["detail"] == "No Patient with that id, or you do not have access to it."


def test_a_refused_booking_is_flashed_in_chinese(client: Any, make_client: Any, factories: Any,
                                                 login: Any) -> None:
    doctor = factories.doctor()
    first, second = factories.patient(with_account=True), factories.patient(with_account=True)
    open_all_week(doctor)
    first_user, second_user, first_id, doctor_id = first.user, second.user, first.id, doctor.id
    db.session.commit()
    start = next_slot_start(skip=5).isoformat()
    earlier = make_client()
    login(earlier, first_user)
    assert earlier.post("/api/v1/consults/appointments", json={
        "patient_id": first_id, "doctor_id": doctor_id, "start": start}).status_code == 201
    login(client, second_user)
    page = _text(client.post("/consults/book", data={"doctor_id": doctor_id, "start": start}, headers=ZH))
    assert "该时段不可预约，请选择其他时间。" in page
    assert "Choose another time" not in page


def test_the_consult_scripts_get_their_words_from_the_page_in_chinese(make_client: Any, factories: Any,
                                                                      login: Any, app: Any) -> None:
    """Status lines, prompts and the live clock set by script read Chinese, not the scripts' English."""
    doctor, patient, appt = admitted_consult(factories, app, admit=False)
    browser = make_client()
    login(browser, patient.user)
    page = _text(browser.get(f"/consults/{appt.id}/waiting", headers=ZH))
    words = json.loads(re.search(r'id="waiting-text">(.*?)</script>', page, re.S).group(1))
    assert words["inConsult"] == "您正在与医生进行问诊。" and words["allGood"].startswith("一切正常")
    stage = json.loads(re.search(r'id="consult-text">(.*?)</script>', page, re.S).group(1))
    assert stage["leavePatient"].startswith("要离开问诊吗") and stage["waitingDoctor"] == "正在等待医生…"
    assert stage["relayedWhy"] == "经医院媒体服务器中转（%(reason)s）"
    doc = make_client()
    login(doc, doctor)
    today = _text(doc.get("/consults/today", headers=ZH))
    assert 'data-failed="列表更新失败，稍后将自动重试。"' in today and "%(now)s" in today
    for script in ("waiting.js", "consult.js", "today.js", "participants.js", "relay.js"):
        source = (Path(__file__).resolve().parents[2] / "app/consults/static" / script).read_text()
        assert "Waiting for the doctor" not in source and "this list keeps itself" not in source
        assert "You are in the consult with the doctor" not in source and "from the consult?" not in source
        assert "Relayed through the hospital" not in source


def test_a_consult_form_error_names_the_field_to_fix_in_chinese(client: Any, factories: Any, login: Any) -> None:
    doctor = factories.doctor()
    login(client, doctor)
    page = _text(client.post("/consults/availability", headers=ZH, follow_redirects=True, data={
        "weekday": 2, "start_time": "11:00", "end_time": "10:00", "slot_minutes": "30"}))
    assert "时间段的结束时间必须晚于开始时间。" in page  # the field hint, not only "some fields need attention"
    assert "The window must end after it starts." not in page


def test_the_upload_script_reports_progress_and_counts_in_chinese(client: Any, factories: Any, login: Any) -> None:
    """The scan upload's progress line, counts and links set by script come from the page, in the reader's language."""
    login(client, factories.nurse())
    page = _text(client.get("/scans/upload", headers=ZH))
    words = json.loads(re.search(r'id="upload-text">(.*?)</script>', page, re.S).group(1))
    assert words["uploading"] == "正在上传…" and words["network"].startswith("网络错误")
    assert "{stored}" in words["counts"] and "stored," not in words["counts"]
    source = (Path(__file__).resolve().parents[2] / "app/imaging/static/imaging.js").read_text()
    assert "say(\"counts\"" in source and "${c.stored} stored" not in source


def test_a_refused_dicomweb_query_is_explained_in_chinese(client: Any, factories: Any, login: Any) -> None:
    """The details of a QIDO query the server cannot honour, keys and levels included, read Chinese."""
    login(client, factories.nurse())
    resp = client.get("/dicomweb/studies?Modality=CT", headers=ZH)
    body = resp.get_json()
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert body["title"] == "查询无效" and body["detail"] == "Modality 不是本服务器在检查检索中支持的匹配键。"
    assert body["errors"]["Modality"][0].startswith("此处支持的匹配键：")
    for url, detail in [("/dicomweb/series?SeriesNumber=first", "SeriesNumber 是整数。"),
                        ("/dicomweb/studies?limit=ten", "limit 必须是整数。"),
                        ("/dicomweb/studies?Foo=1", "Foo 既不是查询参数，也不是 DICOM 属性。"),
                        ("/dicomweb/studies?PatientName=a=b=c=d", "人名最多有三个成分组（字母=表意=拼音）。")]:
        assert client.get(url, headers=ZH).get_json()["detail"] == detail, url
    dated = client.get("/dicomweb/studies?StudyDate=2024", headers=ZH).get_json()
    assert dated["errors"]["StudyDate"] == ["请使用 YYYYMMDD 格式或 YYYYMMDD-YYYYMMDD 范围。"]
    english = client.get("/dicomweb/studies?Modality=CT").get_json()
    assert english["detail"] == "Modality is not a matching key this server supports in study searches."


def test_the_smart_demo_app_gets_its_words_from_the_page_in_chinese(client: Any) -> None:
    """The demo app's steps, record lists and prescription statuses set by script read Chinese."""
    page = _text(client.get("/smart-demo/", headers=ZH))
    words = json.loads(re.search(r'id="smart-demo-text">(.*?)</script>', page, re.S).group(1))
    assert words["allowed"].startswith("您已允许该应用访问") and words["done"].startswith("完成。")
    assert words["exchanged"] == "应用用授权码换取了访问令牌（权限范围：{scopes}）。"
    assert words["highRisk"] == "{substance}（高风险）" and words["noAllergies"] == "没有过敏记录。"
    assert words["statuses"]["active"] == "有效" and words["statuses"]["on-hold"] == "暂停"
    english = _text(client.get("/smart-demo/", headers={"Accept-Language": "en"}))
    assert json.loads(re.search(r'id="smart-demo-text">(.*?)</script>', english, re.S).group(1))["done"] == \
        "Done. Revoke the app at any time under Connected apps."
    source = (Path(__file__).resolve().parents[2] / "app/fhir/static/smart-demo.js").read_text()
    assert 'say("done"' in source and 'statusWord(r.status)' in source
    assert 'status.textContent = "Done.' not in source and '": " + r.status' not in source
