"""RelatedPerson: a patient's caregivers through FHIR, read-only, with the same access rules as the app."""

from __future__ import annotations

from app import db
from app.auth.models import Role
from app.patients import caregivers
from tests.fhir.conftest import validate


def test_caregivers_read_as_related_persons_by_who_may_see_the_patient(app, client, factories, bearer):
    patient = factories.patient(with_account=True)
    nurse_user = factories.nurse(facility=patient.facility)
    stranger_user = factories.nurse(facility=factories.facility(name="Far Clinic"))
    helper = factories.user(Role.PATIENT, name="Wei Caregiver")
    with app.test_request_context("/"):
        link = caregivers.link(patient, caregivers.LinkInput(caregiver_email=helper.email, relationship="grandchild",
                                                             rights=["record", "medicine"]), by=patient.user)
        db.session.commit()
        link_id = link.id

    nurse = bearer(nurse_user, "user/*.rs")
    found = client.get("/fhir/RelatedPerson", query_string={"patient": f"Patient/{patient.id}"},
                       headers=nurse).get_json()
    assert found["total"] == 1
    person = found["entry"][0]["resource"]
    validate(person)
    assert person["patient"]["reference"] == f"Patient/{patient.id}" and person["active"] is True
    assert person["relationship"][0]["coding"][0]["code"] == "GRNDCHILD"
    assert person["name"][0]["text"] == "Wei Caregiver"
    assert sorted(e["valueCode"] for e in person["extension"]) == ["medicine", "record"]
    assert client.get(f"/fhir/RelatedPerson/{link_id}", headers=nurse).status_code == 200

    own = bearer(patient.user, "patient/*.read")
    assert client.get("/fhir/RelatedPerson", headers=own).get_json()["total"] == 1

    stranger = bearer(stranger_user, "user/*.rs")
    assert client.get(f"/fhir/RelatedPerson/{link_id}", headers=stranger).status_code == 404
    assert client.get("/fhir/RelatedPerson", headers=stranger).get_json()["total"] == 0
