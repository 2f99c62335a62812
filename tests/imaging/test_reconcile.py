"""Filing unmatched scans: both identities side by side, a warning on differences, a confirmation, and undo."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.audit.models import AuditEvent
from app.imaging.models import Study
from app.patients.models import Sex


def _study(facility_id: int, *, patient_id: int | None = None, name: str = "DOE^JANE", sex: str = "F",
           born: str = "19480302") -> Study:
    """A study row as ingest leaves it (identity tags copied from the file)."""
    study = Study(study_instance_uid=generate_uid(), facility_id=facility_id, patient_id=patient_id,
                  dicom_patient_id="OUTSIDE-9", patient_name=name, patient_sex=sex, patient_birth_date=born,
                  study_date=date(2024, 1, 15), modalities="CT", study_description="CT CHEST")
    db.session.add(study)
    db.session.commit()
    return study


def _patient_id(study_id: int) -> int | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(Study.patient_id).where(Study.id == study_id))


def _actions(study_id: int) -> list[tuple[str, int | None]]:
    return [tuple(row) for row in db.session.execute(sa.select(AuditEvent.action, AuditEvent.patient_id).where(
        AuditEvent.resource_type == "ImagingStudy", AuditEvent.resource_id == str(study_id),
        AuditEvent.action.in_(["imaging.study.link", "imaging.study.unlink", "imaging.study.move"]))
        .order_by(AuditEvent.id))]


def test_mismatched_scan_needs_the_differences_confirmed(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    man = factories.patient(facility=nurse.facility, given_name="John", family_name="Smith",
                            sex=Sex.MALE, birth_date=date(1984, 3, 2))
    study = _study(nurse.facility_id)
    login(client, nurse)

    page = client.get(f"/scans/studies/{study.id}/link", query_string={"mrn": man.mrn}).get_data(as_text=True)
    assert "DOE, JANE" in page and "SMITH, John" in page  # both identities side by side
    assert "1948-03-02" in page and "1984-03-02" in page
    assert "name, sex, birth date differ from the chart" in page

    # The old one-click link does not file anything: it only leads to the comparison.
    client.post(f"/scans/studies/{study.id}/link", data={"mrn": man.mrn})
    assert _patient_id(study.id) is None
    resp = client.post(f"/scans/studies/{study.id}/link", data={"mrn": man.mrn, "confirmed": "yes"})
    assert resp.status_code == 422
    assert 'data-field="accept_mismatches"' in resp.get_data(as_text=True)
    assert _patient_id(study.id) is None

    resp = client.post(f"/scans/studies/{study.id}/link",
                       data={"mrn": man.mrn, "confirmed": "yes", "accept_mismatches": "yes"})
    assert resp.status_code == 302
    assert _patient_id(study.id) == man.id
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "imaging.study.link",
                                                          AuditEvent.resource_id == str(study.id)))
    assert event.detail["differences_accepted"] == ["name", "sex", "birth date"]


def test_matching_identity_is_filed_after_one_confirmation(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    jane = factories.patient(facility=nurse.facility, given_name="Jané", family_name="Doe", sex=Sex.FEMALE,
                             birth_date=date(1948, 3, 2))
    study = _study(nurse.facility_id)
    login(client, nurse)
    page = client.get(f"/scans/studies/{study.id}/link", query_string={"mrn": jane.mrn}).get_data(as_text=True)
    assert "DOE, JANE" in page and "DOE, Jané" in page and "identity-warning" not in page
    resp = client.post(f"/scans/studies/{study.id}/link", data={"mrn": jane.mrn, "confirmed": "yes"})
    assert resp.status_code == 302 and _patient_id(study.id) == jane.id


def test_scan_without_identity_says_what_could_not_be_compared(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    study = _study(nurse.facility_id, name="", sex="", born="")
    login(client, nurse)
    page = client.get(f"/scans/studies/{study.id}/link", query_string={"mrn": patient.mrn}).get_data(as_text=True)
    assert "The scan carries no name, sex, birth date, so they could not be compared." in page
    assert "identity-warning" not in page


def test_unknown_mrn_is_named_next_to_the_field(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    study = _study(nurse.facility_id)
    login(client, nurse)
    resp = client.get(f"/scans/studies/{study.id}/link", query_string={"mrn": "00000000"})
    assert resp.status_code == 422
    assert 'data-field="mrn">No patient of your clinic has this MRN.' in resp.get_data(as_text=True)


def test_misfiled_scan_is_moved_and_the_viewer_follows(make_client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    doctor_a, doctor_b = factories.doctor(), factories.doctor()
    wrong = factories.patient(facility=nurse.facility, doctor=doctor_a, sex=Sex.FEMALE,
                              birth_date=date(1948, 3, 2), given_name="Jane", family_name="Doe")
    right = factories.patient(facility=nurse.facility, doctor=doctor_b, sex=Sex.FEMALE,
                              birth_date=date(1948, 3, 2), given_name="Jane", family_name="Doe")
    study = _study(nurse.facility_id, patient_id=wrong.id)
    staff, a, b = make_client(), make_client(), make_client()
    login(staff, nurse)
    login(a, doctor_a)
    login(b, doctor_b)
    viewer = f"/scans/studies/{study.study_instance_uid}"
    assert a.get(viewer).status_code == 200 and b.get(viewer).status_code == 404

    chart = staff.get(f"/patients/{wrong.id}").get_data(as_text=True)
    assert "Move to another patient" in chart and "Not this patient's scan" in chart
    page = staff.get(f"/scans/studies/{study.id}/link", query_string={"mrn": right.mrn}).get_data(as_text=True)
    assert "Now on the chart of" in page and wrong.mrn in page
    resp = staff.post(f"/scans/studies/{study.id}/link", data={"mrn": right.mrn, "confirmed": "yes"})
    assert resp.status_code == 302 and _patient_id(study.id) == right.id
    assert a.get(viewer).status_code == 404 and b.get(viewer).status_code == 200
    assert _actions(study.id) == [("imaging.study.unlink", wrong.id), ("imaging.study.move", right.id)]


def test_other_domains_hear_when_a_study_changes_chart(app_ctx: Any, factories: Any) -> None:
    """Reading requests and reports keep a patient id; they are told, in the same transaction, to follow."""
    from app.imaging import service

    nurse = factories.nurse()
    first, second = factories.patient(facility=nurse.facility), factories.patient(facility=nurse.facility)
    study = _study(nurse.facility_id, patient_id=first.id)
    heard: list[tuple[int, int | None, int | None]] = []

    def listener(s: Study, old: int | None, new: int | None, by: Any) -> None:
        heard.append((s.id, old, new))

    stop_listening = service.on_study_refiled(listener)
    try:
        service.link_study(study.id, mrn=second.mrn, by=nurse, accept_mismatches=True)
        service.unlink_study(study.id, by=nurse)
    finally:
        stop_listening()
    assert heard == [(study.id, first.id, second.id), (study.id, second.id, None)]


def test_unlink_puts_the_scan_back_with_the_unmatched(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    study = _study(nurse.facility_id, patient_id=patient.id)
    login(client, nurse)
    assert "OUTSIDE-9" not in client.get("/scans/unmatched").get_data(as_text=True)
    resp = client.post(f"/scans/studies/{study.id}/unlink")
    assert resp.status_code == 302
    assert _patient_id(study.id) is None
    assert "OUTSIDE-9" in client.get("/scans/unmatched").get_data(as_text=True)
    assert _actions(study.id) == [("imaging.study.unlink", patient.id)]


def test_other_clinic_cannot_move_or_unlink(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    study = _study(nurse.facility_id, patient_id=patient.id)
    login(client, factories.nurse(facility=factories.facility()))
    assert client.post(f"/scans/studies/{study.id}/unlink").status_code == 404
    assert client.get(f"/scans/studies/{study.id}/link").status_code == 404
    assert _patient_id(study.id) == patient.id


@pytest.mark.browser
def test_nurse_compares_and_confirms_before_filing(live_server: str, live_factories: Any, new_browser: Any,
                                                   browser_login: Any) -> None:
    nurse = live_factories.nurse()
    man = live_factories.patient(facility=nurse.facility, sex=Sex.MALE, birth_date=date(1984, 3, 2))
    study = _study(nurse.facility_id)
    page = new_browser().new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    browser_login(page, live_server, nurse)

    page.goto(f"{live_server}/scans/unmatched")
    row = page.locator("#unmatched tr", has_text="OUTSIDE-9").filter(has_text="1948-03-02")
    row.get_by_label("MRN").fill(man.mrn)
    row.get_by_role("button", name="Compare and file").click()
    assert "differ from the chart" in page.inner_text("#identity-warning")
    assert page.locator("#identity tr.differs").count() == 3
    page.get_by_role("button", name="File to").click()
    assert page.url.startswith(f"{live_server}/scans/studies/{study.id}/link")  # the box must be ticked first
    page.check("#accept_mismatches")
    page.get_by_role("button", name="File to").click()
    page.wait_for_url(f"{live_server}/patients/{man.id}")
    page.get_by_role("button", name="Not this patient's scan").click()
    page.wait_for_url(f"{live_server}/scans/unmatched")
    assert "back under Unmatched scans" in page.inner_text(".flash")
