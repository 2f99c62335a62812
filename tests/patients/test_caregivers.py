"""Caregivers: a patient (or their clinic, with recorded consent) links a family member's account as proxy; the
caregiver switches "Acting for" and can do exactly what was granted; every proxy action is audited for the
patient; a revocation takes effect on the caregiver's next request."""

from __future__ import annotations

import enum
import json
import re
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit import chain
from app.audit.models import AuditEvent, Outcome
from app.auth.models import Role, User
from app.consults.models import Appointment, AppointmentStatus
from app.errors import ValidationFailed
from app.patients import access, caregivers
from app.patients import service as patients
from app.patients.models import CaregiverLink, CaregiverRight, ConsentMethod
from app.pharmacy import service as pharmacy
from app.pharmacy.models import DispenseStatus
from app.prescriptions import service as rx_service
from tests.consults.helpers import current_slot, open_all_week
from tests.prescriptions.conftest import add_stock, rx_input

ALL = [r.value for r in CaregiverRight]


def _events(patient_id: int, action: str | None = None) -> list[AuditEvent]:
    query = sa.select(AuditEvent).where(AuditEvent.patient_id == patient_id).order_by(AuditEvent.id)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(db.session.scalars(query))


def _link(patient: Any, caregiver: User, rights: list[str], *, by: Any) -> CaregiverLink:
    """Link as the clinic's staff with the patient's spoken consent (the desk's shortest path)."""
    row = caregivers.link(patient, caregivers.LinkInput(caregiver_email=caregiver.email, relationship="grandchild",
                                                        rights=rights, consent_method="spoken"), by=by)
    db.session.commit()
    return row


def _act_for(client: Any, patient_id: int | str) -> Any:
    return client.post("/acting-for", data={"patient_id": patient_id})


@pytest.fixture
def family(factories):
    """Grandma Li (a record without an account), her clinic's nurse, and her grandson's patient-role account."""
    grandma = factories.patient(given_name="Li", family_name="Grandma")
    grandson = factories.user(Role.PATIENT, name="Wei Grandson")
    return {"grandma": grandma, "grandson": grandson, "nurse": factories.nurse(facility=grandma.facility)}


# ---------------------------------------------------------------- linking


def test_patient_links_a_caregiver_by_email_who_then_acts_for_them(make_client, login, factories):
    patient = factories.patient(with_account=True, given_name="Mei")
    helper = factories.user(Role.PATIENT, name="Helper Son")
    own = make_client()
    login(own, patient.user)
    page = own.post("/me/caregivers", data={"cg-caregiver_email": helper.email.upper(), "cg-relationship": "child",
                                           "cg-rights": ["record", "book"]})
    assert page.status_code == 302
    row = db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.patient_id == patient.id))
    assert row.caregiver_id == helper.id and row.rights == [CaregiverRight.RECORD, CaregiverRight.BOOK]
    assert row.consent_method is ConsentMethod.IN_APP and row.consent_recorded_by_id == patient.user.id
    assert "Helper Son" in own.get("/me/caregivers").get_data(as_text=True)

    browser = make_client()
    login(browser, helper)
    header = browser.get("/me").get_data(as_text=True)
    assert 'id="acting-for"' in header and "Mei" in header
    assert patient.mrn not in header  # acting for himself until he switches
    assert _act_for(browser, patient.id).status_code == 302
    page = browser.get("/me").get_data(as_text=True)
    assert patient.mrn in page and 'id="acting-badge"' in page
    read = _events(patient.id, "patient.read")[-1]
    assert (read.actor_id, read.on_behalf_of, read.outcome) == (helper.id, patient.id, Outcome.SUCCESS)
    switch = _events(patient.id, "caregiver.act_for")[-1]
    assert switch.actor_id == helper.id and switch.on_behalf_of == patient.id


def test_link_refuses_unknown_email_staff_accounts_and_the_patients_own(app_ctx, factories):
    patient = factories.patient(with_account=True)
    nurse = factories.nurse(facility=patient.facility)
    for email in ("nobody@test.example", nurse.email, patient.user.email):
        with pytest.raises(ValidationFailed) as exc:
            caregivers.link(patient, caregivers.LinkInput(caregiver_email=email, relationship="child",
                                                          rights=["record"]), by=patient.user)
        assert "caregiver_email" in exc.value.errors
        db.rollback()


def test_staff_cannot_link_without_the_patients_recorded_consent(make_client, login, family):
    nurse_client = make_client()
    login(nurse_client, family["nurse"])
    grandma = family["grandma"]
    form = {"mode": "existing", "cg-caregiver_email": family["grandson"].email, "cg-relationship": "grandchild",
            "cg-rights": ["record"]}
    refused = nurse_client.post(f"/patients/{grandma.id}/caregivers", data=form)
    assert refused.status_code == 403
    assert "consent" in refused.get_data(as_text=True)
    assert db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.patient_id == grandma.id)) is None
    denied = _events(grandma.id, "caregiver.link")[-1]
    assert denied.outcome is Outcome.DENIED and denied.actor_id == family["nurse"].id
    # a signed form needs its reference
    assert nurse_client.post(f"/patients/{grandma.id}/caregivers",
                             data={**form, "cg-consent_method": "signed_form"}).status_code == 403

    done = nurse_client.post(f"/patients/{grandma.id}/caregivers",
                             data={**form, "cg-consent_method": "signed_form", "cg-consent_reference": "PF-0042"})
    assert done.status_code == 302
    row = db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.patient_id == grandma.id))
    assert (row.consent_method, row.consent_reference, row.consent_recorded_by_id, row.granted_by_id) == (
        ConsentMethod.SIGNED_FORM, "PF-0042", family["nurse"].id, family["nurse"].id)


def test_staff_of_another_clinic_cannot_link(make_client, login, factories, family):
    other = factories.nurse(facility=factories.facility(name="Far Clinic"))
    client = make_client()
    login(client, other)
    resp = client.post(f"/patients/{family['grandma'].id}/caregivers", data={
        "mode": "existing", "cg-caregiver_email": family["grandson"].email, "cg-relationship": "grandchild",
        "cg-rights": ["record"], "cg-consent_method": "spoken"})
    assert resp.status_code == 404
    assert db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.patient_id == family["grandma"].id)) is None


def test_staff_create_the_caregivers_account_at_the_desk(make_client, login, family):
    client = make_client()
    login(client, family["nurse"])
    grandma = family["grandma"]
    resp = client.post(f"/patients/{grandma.id}/caregivers", data={
        "mode": "new", "new-full_name": "Daughter Li", "new-caregiver_email": "daughter.li@test.example",
        "new-password": "a long temporary passphrase", "new-relationship": "child",
        "new-rights": ["medicine", "join"], "new-consent_method": "spoken"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    account = db.session.scalar(sa.select(User).where(User.email == "daughter.li@test.example"))
    assert account.role is Role.PATIENT and account.must_change_password
    row = db.session.scalar(sa.select(CaregiverLink).where(CaregiverLink.caregiver_id == account.id))
    assert row.patient_id == grandma.id and row.rights == [CaregiverRight.JOIN, CaregiverRight.MEDICINE]


# ---------------------------------------------------------------- each right, granted and refused


def _probe_record(ctx: dict[str, Any]) -> bool:
    resp = ctx["client"].get("/me")
    if resp.status_code == 403:
        assert "has not given you the right" in resp.get_data(as_text=True)
        return False
    return ctx["grandma"].mrn in resp.get_data(as_text=True)


def _probe_book(ctx: dict[str, Any]) -> bool:
    resp = ctx["client"].get("/consults/book")
    if resp.status_code == 403:
        return False
    return "Book a video consult" in resp.get_data(as_text=True) and ctx["grandma"].mrn in resp.get_data(as_text=True)


def _probe_join(ctx: dict[str, Any]) -> bool:
    appt = current_slot(ctx["doctor"], ctx["grandma"], by=ctx["nurse"])
    ctx["client"].post(f"/consults/{appt.id}/waiting")
    db.session.expire_all()
    arrived = db.session.get(Appointment, appt.id).status is AppointmentStatus.ARRIVED
    if arrived:  # the caregiver's waiting room is the patient's: it turns into the consult when admitted
        page = ctx["client"].get(f"/consults/{appt.id}/waiting").get_data(as_text=True)
        assert 'data-own="yes"' in page and 'id="check-in"' not in page
        seat = _events(ctx["grandma"].id, "consult.caregiver_seat")[-1]
        assert seat.actor_id == ctx["grandson"].id and seat.on_behalf_of == ctx["grandma"].id
    return arrived


def _probe_medicine(ctx: dict[str, Any]) -> bool:
    with ctx["app"].app_context():
        return _collect(ctx)


def _collect(ctx: dict[str, Any]) -> bool:
    doctor, grandma = ctx["doctor"], ctx["grandma"]
    patients.ensure_care_relationship(grandma, doctor, by=ctx["nurse"])
    rx = rx_service.create_draft(grandma, rx_input(), by=doctor)
    rx_service.sign(rx, by=doctor)
    db.session.commit()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = ctx["factories"].pharmacist(facility=rx.dispensing_facility)
    dispense = pharmacy.start_dispense(rx, by=pharmacist)
    pharmacy.transition(dispense, DispenseStatus.IN_PROGRESS, by=pharmacist)
    db.session.commit()
    with access.acting_for(grandma.id):
        code = pharmacy.pickup_code(dispense, by=ctx["grandson"])
    if code is None:  # the caregiver never sees the code; the pharmacist cannot pick them either
        with pytest.raises(ValidationFailed) as exc:
            pharmacy.hand_over(dispense.id, pharmacy.Handover(
                code=pharmacy.pickup_code(dispense, by=ctx["grandson"]) or "", id_document="ID card",
                receiver="proxy", caregiver_link_id=ctx["link"].id), by=pharmacist)
        assert "receiver" in exc.value.errors
        db.rollback()
        return False
    done = pharmacy.hand_over(dispense.id, pharmacy.Handover(code=code, id_document="National ID card",
                                                             receiver="proxy", caregiver_link_id=ctx["link"].id),
                              by=pharmacist)
    db.session.commit()
    assert (done.caregiver_link_id, done.proxy_name, done.proxy_relation) == (ctx["link"].id, "Wei Grandson",
                                                                             "grandchild")
    event = _events(grandma.id, "dispense.handover")[-1]
    assert event.detail["caregiver_id"] == ctx["grandson"].id
    return True


PROBES = {"record": _probe_record, "book": _probe_book, "join": _probe_join, "medicine": _probe_medicine}


@pytest.mark.parametrize("granted", [True, False], ids=["granted", "refused"])
@pytest.mark.parametrize("right", ALL)
def test_each_right_works_only_when_granted(app, make_client, login, factories, family, right, granted):
    """Refused: every other right is granted, so only the one missing right makes the difference."""
    doctor = factories.doctor()
    open_all_week(doctor)
    link = _link(family["grandma"], family["grandson"], [right] if granted else [r for r in ALL if r != right],
                 by=family["nurse"])
    client = make_client()
    login(client, family["grandson"])
    assert _act_for(client, family["grandma"].id).status_code == 302
    ctx = {**family, "client": client, "doctor": doctor, "factories": factories, "link": link, "app": app}
    assert PROBES[right](ctx) is granted
    if not granted and right in ("record", "book", "join"):
        denied = [e for e in _events(family["grandma"].id) if e.outcome is Outcome.DENIED]
        assert denied and denied[-1].actor_id == family["grandson"].id
        assert denied[-1].on_behalf_of == family["grandma"].id


def test_caregiver_acting_for_themself_sees_nothing_of_the_patient(app, make_client, login, factories, family):
    _link(family["grandma"], family["grandson"], ALL, by=family["nurse"])
    doctor = factories.doctor()
    with app.app_context():
        patients.ensure_care_relationship(family["grandma"], doctor, by=family["nurse"])
        rx = rx_service.create_draft(family["grandma"], rx_input(), by=doctor)
        rx_service.sign(rx, by=doctor)
        db.session.commit()
    client = make_client()
    login(client, family["grandson"])
    assert client.get(f"/prescriptions/{rx.id}").status_code == 404
    assert family["grandma"].mrn not in client.get("/me").get_data(as_text=True)
    assert _act_for(client, family["grandma"].id).status_code == 302
    assert client.get(f"/prescriptions/{rx.id}").status_code == 200
    read = _events(family["grandma"].id, "prescription.read")[-1]
    assert read.on_behalf_of == family["grandma"].id and read.actor_id == family["grandson"].id


def test_switching_to_someone_not_cared_for_is_refused_and_audited(make_client, login, factories, family):
    stranger = factories.patient()
    client = make_client()
    login(client, family["grandson"])
    _act_for(client, stranger.id)
    assert stranger.mrn not in client.get("/me").get_data(as_text=True)
    denied = _events(stranger.id, "caregiver.act_for")[-1]
    assert denied.outcome is Outcome.DENIED and denied.actor_id == family["grandson"].id


# ---------------------------------------------------------------- revocation


def test_revocation_takes_effect_on_the_caregivers_next_request(make_client, login, factories):
    patient = factories.patient(with_account=True)
    helper = factories.user(Role.PATIENT)
    link = caregivers.link(patient, caregivers.LinkInput(caregiver_email=helper.email, relationship="spouse",
                                                         rights=ALL), by=patient.user)
    db.session.commit()
    caregiver_client, own = make_client(), make_client()
    login(caregiver_client, helper)
    login(own, patient.user)
    _act_for(caregiver_client, patient.id)
    assert patient.mrn in caregiver_client.get("/me").get_data(as_text=True)

    assert own.post(f"/caregivers/{link.id}/revoke").status_code == 302
    page = caregiver_client.get("/me").get_data(as_text=True)
    assert patient.mrn not in page and "no longer a caregiver" in page
    assert 'id="acting-for"' not in page  # nobody left to act for
    revoked = _events(patient.id, "caregiver.revoke")[-1]
    assert revoked.actor_id == patient.user.id
    with access.acting_for(patient.id):
        assert not access.may_act_for(helper, patient, CaregiverRight.RECORD)


def test_link_ends_at_its_end_date(app_ctx, family):
    link = _link(family["grandma"], family["grandson"], ALL, by=family["nurse"])
    link.valid_until = db.utcnow()
    db.session.commit()
    assert access.active_link(family["grandson"], family["grandma"].id) is None


def test_only_the_patient_their_clinic_or_the_caregiver_may_revoke(make_client, login, factories, family):
    link = _link(family["grandma"], family["grandson"], ALL, by=family["nurse"])
    outsider = make_client()
    login(outsider, factories.user(Role.PATIENT))
    assert outsider.post(f"/caregivers/{link.id}/revoke").status_code == 404
    assert db.session.get(CaregiverLink, link.id).revoked_at is None
    own = make_client()
    login(own, family["grandson"])  # stepping down
    assert own.post(f"/caregivers/{link.id}/revoke").status_code == 302
    db.session.expire_all()
    assert db.session.get(CaregiverLink, link.id).revoked_by_id == family["grandson"].id


# ---------------------------------------------------------------- the audit trail


def test_proxy_actions_show_in_the_admin_trail_and_the_patients_access_log(make_client, login, factories):
    patient = factories.patient(with_account=True)
    helper = factories.user(Role.PATIENT, name="Proxy Person")
    caregivers.link(patient, caregivers.LinkInput(caregiver_email=helper.email, relationship="child",
                                                  rights=["record"]), by=patient.user)
    db.session.commit()
    client = make_client()
    login(client, helper)
    _act_for(client, patient.id)
    client.get("/me")

    own = make_client()
    login(own, patient.user)
    log = own.get("/me/access-log").get_data(as_text=True)
    assert re.search(r"Proxy Person\s*<span[^>]*caregiver-visit", log)

    admin = make_client()
    login(admin, factories.admin())
    trail = admin.get(f"/admin/audit?who={helper.id}").get_data(as_text=True)
    assert f'data-on-behalf-of="{patient.id}"' in trail


def test_proxy_events_are_chained_and_verify(app_ctx, family):
    """``on_behalf_of`` is inside the hash when set: events without it hash exactly as before the column existed
    (so a trail sealed earlier still verifies), and erasing it behind the app's back breaks the link."""
    _link(family["grandma"], family["grandson"], ALL, by=family["nurse"])
    with access.acting_for(family["grandma"].id):
        caregivers.start_acting_for(family["grandma"].id, by=family["grandson"])
    db.session.commit()
    event = _events(family["grandma"].id, "caregiver.act_for")[-1]
    row = {c.name: getattr(event, c.name) for c in AuditEvent.__table__.columns}
    before_the_column = [v.isoformat(timespec="microseconds") if isinstance(v, datetime)
                         else v.value if isinstance(v, enum.Enum) else v
                         for k, v in row.items() if k != "on_behalf_of"]
    plain = {**row, "on_behalf_of": None}
    assert chain.canonical(plain) == json.dumps(before_the_column, sort_keys=True, separators=(",", ":"),
                                                ensure_ascii=False).encode()
    assert chain.canonical(row) != chain.canonical(plain)

    chain.seal()
    db.session.commit()
    assert chain.verify().intact
    if db.session.get_bind().dialect.name != "postgresql":
        return
    db.session.execute(sa.text("SET LOCAL session_replication_role = replica"))  # an intruder, triggers off
    db.session.execute(sa.text("UPDATE audit_event SET on_behalf_of = NULL WHERE id = :id"), {"id": event.id})
    db.session.commit()
    broken = chain.verify().first_break
    assert broken is not None and broken.event_id == event.id


def test_caregiver_collects_medicine_with_the_code_and_the_pharmacist_records_them(app, make_client, login,
                                                                                    factories, family):
    link = _link(family["grandma"], family["grandson"], ["medicine"], by=family["nurse"])
    doctor = factories.doctor()
    with app.app_context():
        patients.ensure_care_relationship(family["grandma"], doctor, by=family["nurse"])
        rx = rx_service.create_draft(family["grandma"], rx_input(), by=doctor)
        rx_service.sign(rx, by=doctor)
        db.session.commit()
        add_stock(rx.dispensing_facility_id, "AMOX500", 100)
        pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
        dispense = pharmacy.start_dispense(rx, by=pharmacist)
        pharmacy.transition(dispense, DispenseStatus.IN_PROGRESS, by=pharmacist)
        db.session.commit()
        dispense_id = dispense.id
    grandson = make_client()  # may collect, not see the record: the prescriptions page shows what is ready
    login(grandson, family["grandson"])
    _act_for(grandson, family["grandma"].id)
    assert grandson.get("/me").status_code == 403
    mine = grandson.get("/me/prescriptions")
    assert mine.status_code == 200
    code = re.search(r'class="[^"]*pickup-code[^"]*"[^>]*>\s*([A-Z0-9 -]+?)\s*<', mine.get_data(as_text=True))
    assert code, mine.get_data(as_text=True)[:3000]
    code = code.group(1)
    counter = make_client()
    login(counter, pharmacist)
    page = counter.get(f"/pharmacy/dispenses/{dispense_id}").get_data(as_text=True)
    assert f'value="caregiver:{link.id}"' in page and "Wei Grandson" in page
    done = counter.post(f"/pharmacy/dispenses/{dispense_id}/handover", data={
        "code": code, "id_document": "National ID card", "receiver": f"caregiver:{link.id}"})
    assert done.status_code == 302
    page = counter.get(f"/pharmacy/dispenses/{dispense_id}").get_data(as_text=True)
    assert 'id="registered-caregiver"' in page and "Wei Grandson (grandchild)" in page
