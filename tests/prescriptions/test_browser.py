"""The whole loop in real browsers: doctor prescribes → pharmacist prepares and marks ready → patient sees the
pickup code → pharmacist hands over."""

from __future__ import annotations

import uuid

import pytest

from tests.prescriptions.conftest import add_stock

pytestmark = pytest.mark.browser


def _image_width(page, selector: str) -> int:
    """Wait for the image to decode (fails if it is broken) and return its natural width."""
    return page.locator(selector).evaluate("img => img.decode().then(() => img.naturalWidth)")


def test_prescription_to_pickup(live_server, live_factories, new_browser, browser_login, artifacts_dir):
    tag = uuid.uuid4().hex[:6]
    clinic = live_factories.facility(name=f"Loop Clinic {tag}")
    doctor = live_factories.doctor()
    patient = live_factories.patient(facility=clinic, with_account=True, doctor=doctor, family_name=f"Loop{tag}")
    account = patient.user
    pharmacist = live_factories.pharmacist(facility=clinic)
    add_stock(clinic.id, "AMOX500", 40, days=60, lot=f"SOON-{tag}")
    add_stock(clinic.id, "AMOX500", 100, days=500, lot=f"LATE-{tag}")

    # Doctor: chart → Prescribe → check → sign.
    doc = new_browser().new_page()
    browser_login(doc, live_server, doctor)
    doc.goto(f"{live_server}/patients/{patient.id}")
    doc.click("a:has-text('Prescribe')")
    doc.select_option("#drug_id", label="Amoxicillin 500 mg capsule (oral; penicillin)")
    doc.fill("#dose_units", "1")
    doc.fill("#frequency_per_day", "3")
    doc.fill("#duration_days", "7")
    doc.fill("#quantity", "21")
    doc.fill("#instructions", "Finish the course")
    doc.click("button:has-text('Check prescription')")
    doc.wait_for_selector("text=No allergy, duplicate, interaction or dose problem found.")
    doc.click("button:has-text('Sign prescription')")
    doc.wait_for_selector("text=Prescription signed")
    assert _image_width(doc, "img.rx-qr") > 0
    doc.screenshot(path=str(artifacts_dir / "prescription-signed.png"), full_page=True)
    rx_url = doc.url

    # Pharmacist: queue → prepare (FEFO picks the soon-expiring batch) → ready.
    pharm = new_browser().new_page()
    browser_login(pharm, live_server, pharmacist)
    pharm.click("nav >> text=Pharmacy")
    pharm.click(f"#to-prepare tr:has-text('LOOP{tag.upper()}') >> button:has-text('Prepare')")
    pharm.wait_for_selector(f"text=SOON-{tag}")
    pharm.click("button:has-text('Mark ready for pickup')")
    pharm.wait_for_selector("text=Dispense is now: Ready for pickup.")

    # Patient: My prescriptions shows the code and its QR.
    me = new_browser().new_page()
    browser_login(me, live_server, account)
    me.click("nav >> text=My prescriptions")
    code = me.inner_text(".pickup-code").strip()
    assert len(code) == 9 and "Ready for pickup" in me.inner_text(".my-rx")
    assert _image_width(me, ".pickup img") > 0
    me.screenshot(path=str(artifacts_dir / "prescription-pickup-code.png"), full_page=True)

    # Pharmacist: enter the code, check ID, hand over.
    pharm.click("nav >> text=Pickup")
    pharm.fill("#code", code)
    pharm.click("button:has-text('Find medicine')")
    pharm.fill("#id_document", "National ID card")
    pharm.click("button:has-text('Hand over')")
    pharm.wait_for_selector("text=Handed over 21 units.")
    assert "National ID card" in pharm.inner_text("#handed-over")
    pharm.screenshot(path=str(artifacts_dir / "prescription-handed-over.png"), full_page=True)

    # Patient and doctor see the result.
    me.reload()
    assert "Handed over" in me.inner_text(".my-rx") and me.locator(".pickup-code").count() == 0
    doc.goto(rx_url)
    assert doc.inner_text("#rx-quantity").startswith("All 21 ")
    assert "Completed" in doc.inner_text("h1")
