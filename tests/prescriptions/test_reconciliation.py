"""What patients read about their medicines: only signed orders, printable, one current dose, plain words."""

from __future__ import annotations

import re
from typing import Any

from app import db
from app.patients.models import ClinicalStatus
from app.prescriptions import service as rx_service
from tests.prescriptions.conftest import drug, rx_input


def _active_medications(patient: Any) -> list[tuple[str, str | None]]:
    db.session.expire_all()
    return [(m.name, m.dosage) for m in patient.medications if m.status is ClinicalStatus.ACTIVE]


def _reasons(rx: Any) -> dict[str, str]:
    """The doctor's reason for each warning (here: the same medicine already on the list)."""
    return {f.code: "new dose" for f in rx_service.findings(rx)}


def test_signing_changing_and_stopping_keep_the_medication_list_in_step(app_ctx: Any, factories: Any) -> None:
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, medications=[{"name": "Lisinopril", "dosage": "5 mg once a day"}])
    first = rx_service.create_draft(patient, rx_input("LISI10", frequency_per_day=1, duration_days=30,
                                                      quantity=30), by=doctor)
    rx_service.sign(first, by=doctor, overrides=_reasons(first))
    assert _active_medications(patient) == [("Lisinopril 10 mg tablet", "1 tablet once a day for 30 days")]

    change = rx_service.create_draft(patient, rx_input("LISI10", dose_units=2, frequency_per_day=1,
                                                       duration_days=30, quantity=60), by=doctor)
    rx_service.sign(change, by=doctor, overrides=_reasons(change))
    assert _active_medications(patient) == [("Lisinopril 10 mg tablet", "2 tablets once a day for 30 days")]

    rx_service.set_status(change, "stopped", by=doctor, reason="Dry cough")
    assert _active_medications(patient) == []
    assert len(patient.medications) == 3  # the history stays on the chart for the care team


def _draft(client: Any, patient_id: int, code: str) -> int:
    resp = client.post(f"/api/v1/patients/{patient_id}/medication-requests",
                       json={"drug_id": drug(code).id, "dose_units": 1, "frequency_per_day": 1, "duration_days": 30,
                             "quantity": 30})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.json["id"]


def test_patient_reads_only_signed_printable_current_medicines(make_client: Any, factories: Any,
                                                              login: Any) -> None:
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor,
                                allergies=[{"substance": "Penicillins", "severity": "severe"}],
                                conditions=[{"description": "Type 2 diabetes mellitus", "code": "E11.9"},
                                            {"description": "Essential hypertension", "code": "I10"}],
                                medications=[{"name": "Lisinopril", "dosage": "5 mg once a day"}])
    account = patient.user
    doc, me = make_client(), make_client()
    login(doc, doctor)
    login(me, account)
    cancelled = _draft(doc, patient.id, "AMOX500")
    assert doc.post(f"/api/v1/medication-requests/{cancelled}/status", json={"status": "cancelled"}).status_code == 200
    signed = _draft(doc, patient.id, "LISI10")
    findings = doc.get(f"/api/v1/medication-requests/{signed}").json.get("checks", [])
    overrides = {f["code"]: "new dose" for f in findings}
    resp = doc.post(f"/api/v1/medication-requests/{signed}/sign", json={"overrides": overrides})
    assert resp.status_code == 200, resp.json

    mine = me.get("/me/prescriptions").get_data(as_text=True)
    assert "Amoxicillin" not in mine and "Lisinopril" in mine
    assert me.get(f"/prescriptions/{cancelled}").status_code == 404
    for link in re.findall(r'href="(/prescriptions/\d+/print)"', mine):
        assert me.get(link).status_code == 200, link

    health = me.get("/me").get_data(as_text=True)
    medications = health.split('id="medication"')[1]
    assert "1 tablet once a day for 30 days" in medications and "5 mg once a day" not in medications
    conditions = health.split('id="condition"')[1].split("</section>")[0]
    assert "Type 2 diabetes mellitus" in conditions and "E11.9" not in conditions and "I10" not in conditions
    # The care team still sees the codes and the replaced entry.
    chart = doc.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "E11.9" in chart and "5 mg once a day" in chart
