"""Prescribing: validation, safety checks, signing, the MedicationRequest state machine, QR verification."""

from __future__ import annotations

import base64
import json

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.errors import Conflict, NotFound, ValidationFailed
from app.patients import service as patients
from app.prescriptions import service, signing
from app.prescriptions.models import Prescription, RequestStatus
from tests.prescriptions.conftest import add_stock, drug, rx_input


def _failures(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action,
                                                               AuditEvent.outcome != Outcome.SUCCESS)))


def test_formulary_is_seeded_by_the_migration(app_ctx):
    codes = {d.code for d in service.formulary()}
    assert {"AMOX500", "WARF5", "SIMV40", "CLAR500", "SALB100"} <= codes
    assert len(codes) >= 12
    assert drug("PARA500").sold_in_town and not drug("WARF5").sold_in_town


@pytest.mark.parametrize("field,value", [
    ("drug_id", 999_999), ("drug_id", None), ("quantity", 0), ("quantity", -5), ("quantity", 1_000_000),
    ("dose_units", 0), ("dose_units", -1), ("dose_units", float("nan")), ("frequency_per_day", 0),
    ("frequency_per_day", 50), ("duration_days", 0), ("refills", -1), ("refills", 99), ("quantity", 2.5),
])
def test_bad_input_is_refused_audited_and_nothing_is_saved(app_ctx, factories, field, value):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    with pytest.raises(ValidationFailed) as exc:
        service.create_draft(patient, rx_input(**{field: value}), by=doctor)
    assert field in exc.value.errors
    db.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Prescription)
                             .where(Prescription.patient_id == patient.id)) == 0
    assert _failures("prescription.create")


def test_only_a_treating_doctor_prescribes(app_ctx, factories):
    patient = factories.patient()
    for user in (factories.doctor(), factories.pharmacist(), factories.nurse()):
        with pytest.raises(NotFound):
            service.create_draft(patient, rx_input(), by=user)


def test_dispensing_clinic_defaults_to_patients_clinic_and_must_have_a_pharmacy(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    rx = service.create_draft(patient, rx_input(), by=doctor)
    assert rx.dispensing_facility_id == patient.facility_id
    no_pharmacy = factories.facility(has_pharmacy=False)
    with pytest.raises(ValidationFailed) as exc:
        service.create_draft(patient, rx_input(dispensing_facility_id=no_pharmacy.id), by=doctor)
    assert "dispensing_facility_id" in exc.value.errors


def test_allergy_to_the_class_blocks_signing(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, allergies=[{"substance": "Penicillins", "severity": "severe"}])
    rx = service.create_draft(patient, rx_input("AMOX500"), by=doctor)
    db.session.commit()
    with pytest.raises(Conflict) as exc:
        service.sign(rx, by=doctor, overrides={f["code"]: "I know" for f in []})
    assert exc.value.extra["findings"][0]["kind"] == "allergy"
    assert exc.value.extra["findings"][0]["level"] == "contraindication"
    # Even an override reason does not unblock a contraindication.
    code = exc.value.extra["findings"][0]["code"]
    db.rollback()
    with pytest.raises(Conflict):
        service.sign(rx, by=doctor, overrides={code: "patient insists"})
    db.rollback()
    assert db.session.get(Prescription, rx.id).status is RequestStatus.DRAFT
    assert _failures("prescription.sign")


def test_mild_allergy_by_drug_name_is_an_overridable_warning(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, allergies=[{"substance": "ibuprofen", "severity": "mild"}])
    rx = service.create_draft(patient, rx_input("IBUP400", frequency_per_day=2), by=doctor)
    db.session.commit()
    [finding] = service.findings(rx)
    assert finding.level == "warning"
    with pytest.raises(Conflict):
        service.sign(rx, by=doctor)
    db.rollback()
    rx = db.session.get(Prescription, rx.id)
    service.sign(rx, by=doctor, overrides={finding.code: "Mild rash only; benefit outweighs"})
    assert rx.status is RequestStatus.ACTIVE
    assert rx.overrides[0]["reason"] == "Mild rash only; benefit outweighs"


def test_duplicate_therapy_same_drug_and_same_class(app_ctx, factories, signed_rx):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, with_account=True)
    signed_rx("ATOR20", patient=patient, doctor=doctor)
    same = service.create_draft(patient, rx_input("ATOR20"), by=doctor)
    assert [f.kind for f in service.findings(same)] == ["duplicate"]
    klass = service.create_draft(patient, rx_input("SIMV40", frequency_per_day=1), by=doctor)
    [f] = service.findings(klass)
    assert f.kind == "duplicate" and "statin" in f.message


def test_recorded_medication_counts_for_interactions(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, medications=[{"name": "Warfarin", "dosage": "5 mg daily"}])
    rx = service.create_draft(patient, rx_input("IBUP400", frequency_per_day=2), by=doctor)
    [f] = service.findings(rx)
    assert f.kind == "interaction" and f.level == "warning" and "Major" in f.message


def test_contraindicated_interaction_blocks(app_ctx, factories, signed_rx):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, with_account=True)
    signed_rx("CLAR500", patient=patient, doctor=doctor, frequency_per_day=2)
    rx = service.create_draft(patient, rx_input("SIMV40", frequency_per_day=1), by=doctor)
    levels = {f.kind: f.level for f in service.findings(rx)}
    assert levels == {"interaction": "contraindication"}
    with pytest.raises(Conflict):
        service.sign(rx, by=doctor, overrides={f.code: "needed" for f in service.findings(rx)})


def test_max_daily_dose_warns_then_blocks_when_absurd(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    ok = service.create_draft(patient, rx_input("PARA500", dose_units=2, frequency_per_day=4), by=doctor)
    assert service.findings(ok) == []  # 4 g/day is the maximum
    high = service.create_draft(patient, rx_input("PARA500", dose_units=2, frequency_per_day=5), by=doctor)
    assert [(f.kind, f.level) for f in service.findings(high)] == [("dose", "warning")]
    absurd = service.create_draft(patient, rx_input("PARA500", dose_units=4, frequency_per_day=6), by=doctor)
    assert [(f.kind, f.level) for f in service.findings(absurd)] == [("dose", "contraindication")]


def test_signed_prescription_is_frozen(app_ctx, factories, signed_rx):
    rx = signed_rx()
    before = (rx.quantity, rx.content_hash)
    with pytest.raises(Conflict):
        service.update_draft(rx, rx_input(quantity=100), by=rx.prescriber)
    db.rollback()
    rx = db.session.get(Prescription, rx.id)
    assert (rx.quantity, rx.content_hash) == before
    assert _failures("prescription.update")


def test_signature_verifies_offline_and_tampering_is_detected(app_ctx, factories, signed_rx):
    rx = signed_rx()
    payload = service.qr_payload(rx)
    public = signing.app_private_key().public_key()
    document = signing.verify_payload(payload, public)
    assert document["id"] == rx.id and document["quantity"] == 21
    assert signing.content_hash(signing.canonical_bytes(document)) == rx.content_hash

    prefix, body, sig = payload.split(".")
    altered = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    altered["quantity"] = 210
    forged_body = base64.urlsafe_b64encode(signing.canonical_bytes(altered)).rstrip(b"=").decode()
    for bad in (f"{prefix}.{forged_body}.{sig}", payload[:-4] + "AAAA", "THRX1.abc", "hello", ""):
        with pytest.raises(signing.InvalidPayload):
            signing.verify_payload(bad, public)
    # Another hospital's key does not verify our payloads.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with pytest.raises(signing.InvalidPayload):
        signing.verify_payload(payload, Ed25519PrivateKey.generate().public_key())


def test_offline_verify_cli(app_ctx, signed_rx, tmp_path, capsys):
    rx = signed_rx()
    key_file = tmp_path / "rx.pem"
    key_file.write_text(signing.public_pem(signing.app_private_key().public_key()))
    assert signing.main(["--public-key", str(key_file), service.qr_payload(rx)]) == 0
    assert f'"id": {rx.id}' in capsys.readouterr().out
    assert signing.main(["--public-key", str(key_file), service.qr_payload(rx)[:-3] + "xyz"]) == 1
    assert "INVALID" in capsys.readouterr().err


def test_pharmacy_verification_checks_the_record(app_ctx, factories, signed_rx):
    rx = signed_rx()
    pharmacist = factories.pharmacist(facility=rx.dispensing_facility)
    db.session.commit()
    result = service.verify(service.qr_payload(rx), by=pharmacist)
    assert result.valid and result.prescription.id == rx.id
    with pytest.raises(ValidationFailed):
        service.verify(service.qr_payload(rx)[:-6] + "AAAAAA", by=pharmacist)
    db.rollback()
    other = factories.pharmacist(facility=factories.facility())
    assert not service.verify(service.qr_payload(rx), by=other).valid


REQUEST_STATUSES = list(RequestStatus)
R = RequestStatus
EXPECTED_REQUEST_MOVES = {  # the prescription's life (FHIR MedicationRequest), spelled out here
    R.DRAFT: {R.ACTIVE, R.CANCELLED},
    R.ACTIVE: {R.ON_HOLD, R.CANCELLED, R.STOPPED, R.COMPLETED},
    R.ON_HOLD: {R.ACTIVE, R.CANCELLED, R.STOPPED},
}


@pytest.mark.parametrize("start", REQUEST_STATUSES)
@pytest.mark.parametrize("target", REQUEST_STATUSES)
def test_request_state_machine(app_ctx, factories, start, target):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    rx = service.create_draft(patient, rx_input(), by=doctor)
    if start is not RequestStatus.DRAFT:
        service.sign(rx, by=doctor)
    rx.status = start
    db.session.commit()
    allowed = (target in EXPECTED_REQUEST_MOVES.get(start, set()) and target in service.DOCTOR_TARGETS
               and (start, target) != (RequestStatus.DRAFT, RequestStatus.ACTIVE))  # that one only by signing
    if allowed:
        service.set_status(rx, target, by=doctor, reason="test")
        assert rx.status is target
    else:
        with pytest.raises(Conflict):
            service.set_status(rx, target, by=doctor)
        db.rollback()
        assert db.session.get(Prescription, rx.id).status is start


def test_draft_is_invisible_to_patient_and_pharmacy(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, with_account=True)
    rx = service.create_draft(patient, rx_input(), by=doctor)
    db.session.commit()
    pharmacist = factories.pharmacist(facility=patient.facility)
    for user in (patient.user, pharmacist):
        with pytest.raises(NotFound):
            service.get(rx.id, by=user)
    assert service.get(rx.id, by=doctor).id == rx.id
    assert patients.get_patient(patient.id, by=doctor)
    add_stock(patient.facility_id, "AMOX500", 10)


@pytest.mark.parametrize("substance,code,matches", [
    ("Penicillins", "AMOX500", True), ("amoxicillin capsules", "AMOX500", True), ("ACE inhibitors", "LISI10", True),
    ("ace", "PARA500", False), ("NSAIDs", "IBUP400", True), ("Peanut", "AMOX500", False), ("statin", "ATOR20", True),
    ("pen", "AMOX500", False),
])
def test_allergy_matching_uses_whole_words(app_ctx, substance, code, matches):
    from app.prescriptions.rules import _matches

    assert _matches(substance, drug(code)) is matches


def test_generated_key_is_shared_by_concurrent_workers(tmp_path):
    """Workers that start together and all generate a key end up using one."""
    import threading

    path = tmp_path / "rx.pem"
    keys = []

    def load() -> None:
        signing._keys.pop(path, None)
        keys.append(signing.load_private_key(path, create=True))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({signing.key_id(k.public_key()) for k in keys}) == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileNotFoundError):
        signing.load_private_key(tmp_path / "missing.pem", create=False)
