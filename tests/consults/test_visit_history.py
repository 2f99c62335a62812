"""The consult note is readable after the consult: a visit history on the chart for the care team."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydicom.uid import generate_uid

from app import db
from app.imaging.models import Study
from tests.consults.helpers import admitted_consult
from tests.prescriptions.conftest import drug


def test_chart_shows_consults_with_notes_prescriptions_and_scans(app: Any, make_client: Any, factories: Any,
                                                                 login: Any) -> None:
    doctor, patient, appt = admitted_consult(factories, app)
    patient = db.session.merge(patient)
    account, other_doctor = patient.user, factories.doctor()
    nurse = factories.nurse(facility=patient.facility)
    db.session.add(Study(study_instance_uid=generate_uid(), patient_id=patient.id, facility_id=patient.facility_id,
                         study_date=date(2024, 1, 15), modalities="CT", study_description="CT CHEST"))
    db.session.commit()
    doc, staff, me, outsider = make_client(), make_client(), make_client(), make_client()
    login(doc, doctor)
    login(staff, nurse)
    login(me, account)
    login(outsider, other_doctor)

    note = "Cough for 3 weeks.\nChest clear. Review in 2 weeks."
    assert doc.post(f"/consults/{appt.id}/end", data={"notes": note, "diagnosis": "Viral bronchitis"}
                    ).status_code == 302
    resp = doc.post(f"/patients/{patient.id}/prescriptions/new",
                    data={"drug_id": str(drug("IBUP400").id), "dose_units": "1", "frequency_per_day": "3",
                          "duration_days": "5", "quantity": "15"})
    rx_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    doc.post(f"/prescriptions/{rx_id}/sign", data={})

    for client in (doc, staff):
        history = client.get(f"/patients/{patient.id}").get_data(as_text=True).split('id="visit-history"')[1]
        history = history.split("</section>")[0]
        assert f"Video consult with {doctor.full_name}" in history
        assert "Diagnosis: Viral bronchitis" in history and "Chest clear. Review in 2 weeks." in history
        assert "Ibuprofen 400 mg tablet" in history and "CT CHEST" in history
        assert "UTC" in history
    # The patient reads their own summary elsewhere; the chart's history is for the care team.
    assert 'id="visit-history"' not in me.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert outsider.get(f"/patients/{patient.id}").status_code == 404
