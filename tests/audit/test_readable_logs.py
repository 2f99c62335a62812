"""Logs people can read: "Who viewed my record" by visit and person in plain words; audit filters by name."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from app import db
from app.audit import wording
from app.audit.models import AuditEvent, Outcome


def _event(actor: Any, action: str, patient_id: int, at: datetime) -> None:
    db.session.add(AuditEvent(occurred_at=at, actor_id=actor.id, actor_role=actor.role.value,
                              actor_name=actor.full_name, action=action, outcome=Outcome.SUCCESS,
                              patient_id=patient_id))
    db.session.commit()


def test_who_viewed_my_record_reads_as_visits(make_client: Any, factories: Any, login: Any) -> None:
    doctor = factories.doctor(name="Dr Ada Okafor")
    patient = factories.patient(with_account=True, doctor=doctor)
    account, nurse = patient.user, factories.nurse(name="Nurse Ben Patel")
    t0 = datetime(2026, 3, 2, 9, 12, tzinfo=UTC)
    for minutes, action in ((0, "patient.read"), (1, "prescription.read"), (2, "prescription.read"),
                            (3, "imaging.study.view"), (4, "imaging.instance.read"), (5, "patient.read")):
        _event(doctor, action, patient.id, t0 + timedelta(minutes=minutes))
    _event(doctor, "patient.read", patient.id, t0 + timedelta(hours=3))  # a second visit, later that day
    _event(nurse, "patient.update", patient.id, t0 + timedelta(minutes=2))
    me = make_client()
    login(me, account)
    page = me.get("/me/access-log").get_data(as_text=True)
    table = page.split('id="visits"')[1].split("</table>")[0]
    rows = [html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip()) for r in table.split("<tr>")[2:]]
    mine = [r for r in rows if "Mar 2, 2026" in r]
    assert mine == [
        "Mar 2, 2026, 12:12 PM UTC Dr Ada Okafor (doctor) Opened the record.",
        "Mar 2, 2026, 9:12 AM–9:17 AM UTC Dr Ada Okafor (doctor) Opened the record 2 times, looked at "
        "prescriptions 2 times, viewed a scan and looked at the scan's images.",
        "Mar 2, 2026, 9:14 AM UTC Nurse Ben Patel (clinic staff) Changed the personal details.",
    ]
    assert not re.search(r"\b(patient|prescription|imaging)\.[a-z_]+", table)  # no action codes


def test_every_action_code_has_words() -> None:
    assert wording.describe("prescription.sign") == "signed a prescription"
    assert wording.describe("prescription.sign", 3) == "signed 3 prescriptions"
    assert wording.describe("imaging.something_new") == "looked at scans"
    assert wording.describe("made.up") == "used the record"


def test_admin_filters_the_trail_by_typed_names(make_client: Any, factories: Any, login: Any) -> None:
    doctor = factories.doctor(name="Dr Zora Quillfeather")
    other = factories.doctor(name="Dr Someone Else")
    patient = factories.patient(doctor=doctor, given_name="Maribel", family_name="Xanthopoulos")
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    _event(doctor, "patient.read", patient.id, t0)
    _event(other, "patient.read", patient.id + 10_000, t0)
    admin = make_client()
    login(admin, factories.admin())

    by_name = admin.get("/admin/audit", query_string={"who": "quillfeather"}).get_data(as_text=True)
    assert "Dr Zora Quillfeather" in by_name and "Dr Someone Else" not in by_name
    assert "Opened the record" in by_name  # the code is explained in words

    by_patient = admin.get("/admin/audit", query_string={"patient": "xanthopoulos mar"}).get_data(as_text=True)
    assert "Dr Zora Quillfeather" in by_patient and "Dr Someone Else" not in by_patient
    by_mrn = admin.get("/admin/audit", query_string={"patient": patient.mrn}).get_data(as_text=True)
    assert "Dr Zora Quillfeather" in by_mrn

    unknown = admin.get("/admin/audit", query_string={"patient": "Nobodyhere"}).get_data(as_text=True)
    assert "No patient matches \u201cNobodyhere\u201d" in unknown and "0 events." in unknown
