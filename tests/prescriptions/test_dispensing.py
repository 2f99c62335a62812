"""Dispensing: FEFO picking, partial fills, refills, the MedicationDispense state machine, pickup codes,
proxy pickup, expiry of uncollected medicine, and who sees what."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.notify.models import Notification
from app.pharmacy import service
from app.pharmacy.models import Dispense, DispenseStatus, StockBatch
from app.prescriptions import service as rx_service
from app.prescriptions.models import RequestStatus
from tests.prescriptions.conftest import add_stock


def _ready(rx, pharmacist, quantity=None):
    dispense = service.start_dispense(rx, by=pharmacist, quantity=quantity)
    service.transition(dispense, DispenseStatus.IN_PROGRESS, by=pharmacist)
    db.session.commit()
    return dispense, service.pickup_code(dispense, by=rx.patient.user)


def _notes(user):
    return [n.subject for n in db.session.scalars(sa.select(Notification).where(Notification.recipient_id == user.id)
                                                  .order_by(Notification.id))]


def test_fefo_picks_first_expiring_batch_and_skips_expired(app_ctx, factories, signed_rx):
    rx = signed_rx(quantity=30)
    fid = rx.dispensing_facility_id
    late = add_stock(fid, "AMOX500", 100, days=400, lot="LATE")
    soon = add_stock(fid, "AMOX500", 20, days=30, lot="SOON")
    expired = add_stock(fid, "AMOX500", 50, days=1, lot="OLD")
    expired.expires_on = expired.expires_on - timedelta(days=5)
    db.session.commit()
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense = service.start_dispense(rx, by=pharmacist)
    assert [(p.batch.lot, p.quantity) for p in dispense.picks] == [("SOON", 20), ("LATE", 10)]
    assert (soon.quantity, late.quantity, expired.quantity) == (0, 90, 50)
    assert dispense.quantity == 30


def test_partial_dispense_then_top_up_then_refill(app_ctx, factories, signed_rx):
    rx = signed_rx(quantity=20, refills=1)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    add_stock(rx.dispensing_facility_id, "AMOX500", 12)
    first, code = _ready(rx, pharmacist)
    assert (first.quantity_requested, first.quantity, first.fill) == (20, 12, 0)
    assert service.progress(rx) == service.Progress(prescribed=40, dispensed=0, in_hand=12, remaining=28,
                                                    unit="capsule")
    service.hand_over(first.id, service.Handover(code=code, id_document="ID card"), by=pharmacist)
    db.session.commit()
    with pytest.raises(Conflict):  # shelf is empty now
        service.start_dispense(rx, by=pharmacist)
    db.rollback()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    top_up, code = _ready(rx, pharmacist)
    assert (top_up.fill, top_up.quantity) == (0, 8)
    service.hand_over(top_up.id, service.Handover(code=code, id_document="ID card"), by=pharmacist)
    db.session.commit()
    # The refill is due after three quarters of the 7-day course: not today, and not in the queue.
    assert service.refill_due(rx) == (db.utcnow() + timedelta(days=5.25)).date()
    assert rx not in service.queue(by=pharmacist).to_prepare
    with pytest.raises(Conflict, match="Refill too early"):
        service.start_dispense(rx, by=pharmacist)
    db.rollback()
    for d in (first, top_up):
        db.session.get(Dispense, d.id).handed_over_at = db.utcnow() - timedelta(days=6)
    db.session.commit()
    assert service.refill_due(rx) is None and rx in service.queue(by=pharmacist).to_prepare
    refill, code = _ready(rx, pharmacist)
    assert (refill.fill, refill.quantity) == (1, 20)
    service.hand_over(refill.id, service.Handover(code=code, id_document="ID card"), by=pharmacist)
    assert rx.status is RequestStatus.COMPLETED
    assert service.progress(rx).remaining == 0
    with pytest.raises(Conflict):
        service.start_dispense(rx, by=pharmacist)


@pytest.mark.parametrize("quantity", [0, -3, 22, 10**9, True])
def test_dispensing_more_than_prescribed_or_nonsense_is_refused(app_ctx, factories, signed_rx, quantity):
    rx = signed_rx(quantity=21)
    add_stock(rx.dispensing_facility_id, "AMOX500", 1000)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    with pytest.raises(ValidationFailed):
        service.start_dispense(rx, by=pharmacist, quantity=quantity)
    db.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Dispense)
                             .where(Dispense.prescription_id == rx.id)) == 0
    assert db.session.scalar(sa.select(StockBatch.quantity).where(
        StockBatch.facility_id == rx.dispensing_facility_id)) == 1000


def test_second_open_dispense_is_refused(app_ctx, factories, signed_rx):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    service.start_dispense(rx, by=pharmacist, quantity=5)
    db.session.commit()
    with pytest.raises(Conflict):
        service.start_dispense(rx, by=pharmacist, quantity=5)


def test_ready_notifies_patient_and_code_works_once(app_ctx, factories, signed_rx):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense, code = _ready(rx, pharmacist)
    assert len(code) == 9 and code[4] == "-"
    assert "Your medicine is ready for pickup" in _notes(rx.patient.user)
    # Only a hash of the code is stored.
    assert code.replace("-", "") not in str(dispense.pickup_code_hash) and len(dispense.pickup_code_hash) == 64
    assert service.pickup_code(dispense, by=pharmacist) is None
    assert service.find_by_code(code.lower().replace("-", " "), by=pharmacist).id == dispense.id
    done = service.hand_over(dispense.id, service.Handover(code=code, id_document="Passport"), by=pharmacist)
    assert done.status is DispenseStatus.COMPLETED and done.receiver.value == "patient"
    db.session.commit()
    with pytest.raises(ValidationFailed) as exc:
        service.find_by_code(code, by=pharmacist)
    assert "already used" in exc.value.errors["code"][0]
    db.rollback()
    with pytest.raises(Conflict):
        service.hand_over(dispense.id, service.Handover(code=code, id_document="Passport"), by=pharmacist)
    db.rollback()
    assert service.pickup_code(db.session.get(Dispense, dispense.id), by=rx.patient.user) is None


@pytest.mark.parametrize("code", ["", "AAAA-AAAA", "ZZZZZZZZZZ", "' OR 1=1 --"])
def test_forged_codes_are_refused_and_audited(app_ctx, factories, signed_rx, code):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense, _real = _ready(rx, pharmacist)
    with pytest.raises(ValidationFailed):
        service.find_by_code(code, by=pharmacist)
    db.rollback()
    with pytest.raises(ValidationFailed) as exc:
        service.hand_over(dispense.id, service.Handover(code=code, id_document="ID"), by=pharmacist)
    assert "code" in exc.value.errors
    db.rollback()
    assert db.session.get(Dispense, dispense.id).status is DispenseStatus.IN_PROGRESS
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "dispense.handover", AuditEvent.outcome == Outcome.FAILURE,
        AuditEvent.resource_id == str(dispense.id))) == 1


def test_proxy_pickup_records_name_and_relation(app_ctx, factories, signed_rx):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense, code = _ready(rx, pharmacist)
    with pytest.raises(ValidationFailed) as exc:
        service.hand_over(dispense.id, service.Handover(code=code, id_document="", receiver="proxy"),
                          by=pharmacist)
    assert set(exc.value.errors) == {"id_document", "proxy_name", "proxy_relation"}
    db.rollback()
    done = service.hand_over(dispense.id, service.Handover(
        code=code, id_document="Driving licence", receiver="proxy", proxy_name="Jon Doe",
        proxy_relation="son"), by=pharmacist)
    assert (done.receiver.value, done.proxy_name, done.proxy_relation) == ("proxy", "Jon Doe", "son")
    assert done.handed_over_by_id == pharmacist.id and done.handed_over_at is not None


DISPENSE_STATUSES = list(DispenseStatus)
S = DispenseStatus
EXPECTED_DISPENSE_MOVES = {  # what a pharmacist may do next (FHIR MedicationDispense), spelled out here
    S.PREPARATION: {S.IN_PROGRESS, S.ON_HOLD, S.DECLINED, S.CANCELLED},
    S.IN_PROGRESS: {S.COMPLETED, S.ON_HOLD, S.CANCELLED},
    S.ON_HOLD: {S.PREPARATION, S.DECLINED, S.CANCELLED},
}


@pytest.mark.parametrize("start", DISPENSE_STATUSES)
@pytest.mark.parametrize("target", DISPENSE_STATUSES)
def test_dispense_state_machine(app_ctx, factories, signed_rx, start, target):
    rx = signed_rx()
    batch = add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense = service.start_dispense(rx, by=pharmacist)
    dispense.status = start
    db.session.commit()
    allowed = target in EXPECTED_DISPENSE_MOVES.get(start, set()) and target is not DispenseStatus.COMPLETED
    if allowed:
        service.transition(dispense, target, by=pharmacist, reason="test reason")
        assert dispense.status is target
        returned = target in (DispenseStatus.DECLINED, DispenseStatus.CANCELLED)
        assert batch.quantity == (100 if returned else 79)
    else:
        with pytest.raises(Conflict):
            service.transition(dispense, target, by=pharmacist, reason="test reason")
        db.rollback()
        assert db.session.get(Dispense, dispense.id).status is start


def test_decline_needs_a_reason(app_ctx, factories, signed_rx):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense = service.start_dispense(rx, by=pharmacist)
    db.session.commit()
    with pytest.raises(ValidationFailed):
        service.transition(dispense, DispenseStatus.DECLINED, by=pharmacist)


def test_expiry_job_cancels_uncollected_and_notifies(app_ctx, factories, signed_rx):
    rx = signed_rx()
    batch = add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    fresh_rx = signed_rx()
    waiting, _ = _ready(rx, pharmacist)
    fresh, _ = _ready(fresh_rx, pharmacist)
    waiting.ready_at = db.utcnow() - timedelta(days=11)
    db.session.commit()
    assert service.expire_uncollected(deadline_days=10) == [waiting.id]
    db.session.commit()
    assert waiting.status is DispenseStatus.CANCELLED and "not collected" in waiting.status_reason
    assert fresh.status is DispenseStatus.IN_PROGRESS
    assert batch.quantity == 100 - 21
    assert "Medicine not collected" in _notes(rx.patient.user)
    assert any("cancelled" in s for s in _notes(rx.prescriber))


def test_stopping_the_prescription_cancels_waiting_medicine(app_ctx, factories, signed_rx):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    dispense, code = _ready(rx, pharmacist)
    rx_service.set_status(rx, RequestStatus.STOPPED, by=rx.prescriber, reason="adverse reaction")
    db.session.commit()
    db.session.refresh(dispense)
    assert dispense.status is DispenseStatus.CANCELLED
    with pytest.raises(ValidationFailed):
        service.find_by_code(code, by=pharmacist)


def test_permission_matrix(app_ctx, factories, signed_rx):
    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    mine = factories.pharmacist(facility=rx.dispensing_facility)
    dispense, code = _ready(rx, mine)
    elsewhere = factories.facility()
    stranger = factories.pharmacist(facility=elsewhere)
    add_stock(elsewhere.id, "AMOX500", 100)
    assert service.queue(by=stranger).to_prepare == []
    assert all(not v for v in service.queue(by=stranger).by_status.values())
    with pytest.raises(NotFound):
        rx_service.get(rx.id, by=stranger)
    db.rollback()
    with pytest.raises(NotFound):
        service.get_dispense(dispense.id, by=stranger)
    db.rollback()
    with pytest.raises(NotFound):
        service.start_dispense(rx, by=stranger)
    db.rollback()
    with pytest.raises(ValidationFailed):
        service.find_by_code(code, by=stranger)
    db.rollback()
    with pytest.raises(NotFound):
        service.hand_over(dispense.id, service.Handover(code=code, id_document="ID"), by=stranger)
    db.rollback()
    for user in (rx.patient.user, rx.prescriber, factories.nurse(facility=rx.dispensing_facility)):
        with pytest.raises((Forbidden, NotFound)):
            service.queue(by=user)
        db.rollback()
        with pytest.raises(NotFound):
            service.start_dispense(rx, by=user)
        db.rollback()
    # The patient and the prescriber can read the dispense; a doctor without a care relationship cannot.
    assert service.get_dispense(dispense.id, by=rx.patient.user).id == dispense.id
    assert service.get_dispense(dispense.id, by=rx.prescriber).id == dispense.id
    with pytest.raises(NotFound):
        service.get_dispense(dispense.id, by=factories.doctor())
    db.rollback()
    assert db.session.get(Dispense, dispense.id).status is DispenseStatus.IN_PROGRESS


def test_receive_stock_validates(app_ctx, factories):
    pharmacist = factories.pharmacist()
    from datetime import date

    with pytest.raises(ValidationFailed) as exc:
        service.receive_stock(by=pharmacist, drug_id=424242, lot="", expires_on=date(2000, 1, 1), quantity=0)
    assert set(exc.value.errors) == {"drug_id", "lot", "expires_on", "quantity"}


def test_demo_seed_stocks_the_pharmacy_and_signs_a_prescription(app_ctx, factories):
    from app.seed import DEMO_STOCK, seed_pharmacy

    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    seed_pharmacy(patient.facility, doctor=doctor, maria=patient)
    db.session.commit()
    batches = db.session.scalars(sa.select(StockBatch).where(StockBatch.facility_id == patient.facility_id)).all()
    assert len(batches) == len(DEMO_STOCK)
    [rx] = rx_service.for_patient(patient, by=doctor)
    assert rx.status is RequestStatus.ACTIVE and rx.drug.code == "LISI10"
    pharmacist = factories.pharmacist(facility=patient.facility)
    assert service.queue(by=pharmacist).to_prepare == [rx]


def test_guessing_pickup_codes_is_throttled(app_ctx, factories, signed_rx):
    from app.errors import TooManyRequests

    rx = signed_rx()
    add_stock(rx.dispensing_facility_id, "AMOX500", 100)
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    _dispense, code = _ready(rx, pharmacist)
    for n in range(service.MAX_CODE_FAILURES):
        with pytest.raises(ValidationFailed):
            service.find_by_code(f"{n:08d}".replace("0", "A").replace("1", "B"), by=pharmacist)
        db.rollback()
    with pytest.raises(TooManyRequests):
        service.find_by_code(code, by=pharmacist)  # even the right code waits
    db.rollback()
    assert service.find_by_code(code, by=factories.pharmacist(facility=rx.dispensing_facility))


@pytest.mark.parametrize(("progress", "text"), [
    (service.Progress(90, 30, 0, 60, "tablet"), "60 of 90 tablets still to collect"),
    (service.Progress(90, 0, 30, 60, "tablet"),
     "90 of 90 tablets still to collect, 30 of them ready or being prepared"),
    (service.Progress(1, 1, 0, 0, "inhaler"), "1 inhaler collected"),
])
def test_one_wording_for_quantities(progress, text):
    assert progress.wording() == text
