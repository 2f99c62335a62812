"""FHIR R4 shapes (MedicationRequest, MedicationDispense) for the JSON API; ids only, no free-text PHI beyond
what the resource itself carries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.prescriptions.models import Prescription

if TYPE_CHECKING:
    from app.pharmacy.models import Dispense

FORMULARY_SYSTEM = "urn:town-health:formulary"


def medication(rx_or_drug: Any) -> dict[str, Any]:
    drug = getattr(rx_or_drug, "drug", rx_or_drug)
    return {"coding": [{"system": FORMULARY_SYSTEM, "code": drug.code, "display": drug.display}],
            "text": drug.display}


def medication_request(rx: Prescription, *, progress: Any = None, findings: list[dict[str, Any]] | None = None,
                       qr_payload: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": str(rx.id),
        "status": rx.status.value,
        "intent": "order",
        "medicationCodeableConcept": medication(rx),
        "subject": {"reference": f"Patient/{rx.patient_id}"},
        "requester": {"reference": f"Practitioner/{rx.prescriber_id}", "display": rx.prescriber.full_name},
        "authoredOn": rx.created_at.isoformat() if rx.created_at else None,
        "dosageInstruction": [{
            "text": rx.sig + (f". {rx.instructions}" if rx.instructions else ""),
            "patientInstruction": rx.instructions,
            "route": {"text": rx.drug.route},
            "timing": {"repeat": {"frequency": rx.frequency_per_day, "period": 1, "periodUnit": "d",
                                  "boundsDuration": {"value": rx.duration_days, "unit": "d"}}},
            "doseAndRate": [{"doseQuantity": {"value": rx.dose_units, "unit": rx.drug.form}}],
        }],
        "dispenseRequest": {
            "numberOfRepeatsAllowed": rx.refills,
            "quantity": {"value": rx.quantity, "unit": rx.drug.form},
            "performer": {"reference": f"Organization/{rx.dispensing_facility_id}",
                          "display": rx.dispensing_facility.name},
        },
    }
    if rx.status_reason:
        body["statusReason"] = {"text": rx.status_reason}
    if rx.signed_at:
        body["extension"] = [{"url": "urn:town-health:signature",
                              "valueSignature": {"when": rx.signed_at.isoformat(), "sigFormat": "application/jose",
                                                 "data": rx.signature, "targetFormat": "application/json",
                                                 "who": {"reference": f"Practitioner/{rx.prescriber_id}"}},
                              "hash": rx.content_hash, "kid": rx.key_id}]
    if rx.overrides:
        body["detectedIssue"] = [{"code": o["kind"], "severity": "high" if o["level"] != "warning" else "moderate",
                                  "detail": o["message"], "mitigation": o.get("reason")} for o in rx.overrides]
    if findings is not None:
        body["checks"] = findings
    if progress is not None:
        body["dispensing"] = {"prescribed": progress.prescribed, "dispensed": progress.dispensed,
                              "inPreparation": progress.in_hand, "remaining": progress.remaining}
    if qr_payload:
        body["qrPayload"] = qr_payload
    return body


def medication_dispense(d: Dispense, *, pickup_code: str | None = None) -> dict[str, Any]:
    rx = d.prescription
    body: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "id": str(d.id),
        "status": d.status.value,
        "medicationCodeableConcept": medication(rx),
        "subject": {"reference": f"Patient/{rx.patient_id}"},
        "authorizingPrescription": [{"reference": f"MedicationRequest/{rx.id}"}],
        "location": {"reference": f"Location/{d.facility_id}", "display": d.facility.name},
        "quantity": {"value": d.quantity, "unit": rx.drug.form},
        "extension": [{"url": "urn:town-health:fill", "valueInteger": d.fill},
                      {"url": "urn:town-health:quantity-requested", "valueInteger": d.quantity_requested}],
        "whenPrepared": d.ready_at.isoformat() if d.ready_at else None,
        "whenHandedOver": d.handed_over_at.isoformat() if d.handed_over_at else None,
    }
    if d.prepared_by_id:
        body["performer"] = [{"actor": {"reference": f"Practitioner/{d.prepared_by_id}"}}]
    if d.receiver is not None:
        receiver = ({"reference": f"Patient/{rx.patient_id}"} if d.receiver.value == "patient"
                    else {"display": f"{d.proxy_name} ({d.proxy_relation})"})
        body["receiver"] = [receiver]
    if d.status_reason:
        body["statusReasonCodeableConcept"] = {"text": d.status_reason}
    if pickup_code:
        body["pickupCode"] = pickup_code
    return body
