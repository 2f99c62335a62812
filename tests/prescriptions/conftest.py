"""Helpers for prescription and pharmacy tests: formulary look-ups, stock, and a signed prescription."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.pharmacy.models import StockBatch
from app.prescriptions import service as rx_service
from app.prescriptions.models import Drug


def drug(code: str) -> Drug:
    found = db.session.scalar(sa.select(Drug).where(Drug.code == code))
    assert found is not None, code
    return found


def add_stock(facility_id: int, code: str, quantity: int, *, days: int = 365, lot: str | None = None) -> StockBatch:
    batch = StockBatch(facility_id=facility_id, drug_id=drug(code).id, lot=lot or f"L{days}-{quantity}",
                       expires_on=date.today() + timedelta(days=days), quantity=quantity)
    db.session.add(batch)
    db.session.commit()
    return batch


def rx_input(code: str = "AMOX500", **kw: Any) -> rx_service.PrescriptionInput:
    values: dict[str, Any] = dict(drug_id=drug(code).id, dose_units=1, frequency_per_day=3, duration_days=7,
                                  quantity=21, refills=0, instructions="Take with food")
    values.update(kw)
    return rx_service.PrescriptionInput(**values)


@pytest.fixture
def signed_rx(app_ctx: Any, factories: Any) -> Any:
    """A factory: a signed prescription for a new patient (with account) of the test clinic."""

    def make(code: str = "AMOX500", *, patient: Any = None, doctor: Any = None, **kw: Any) -> Any:
        doctor = doctor or factories.doctor()
        patient = patient or factories.patient(with_account=True, doctor=doctor)
        rx = rx_service.create_draft(patient, rx_input(code, **kw), by=doctor)
        rx_service.sign(rx, by=doctor)
        db.session.commit()
        return rx

    return make
