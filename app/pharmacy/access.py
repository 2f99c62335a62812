"""Who may do what at the pharmacy: the pharmacy domain's authorisation rules."""

from __future__ import annotations

from app.auth.models import Role, User
from app.pharmacy.models import Dispense
from app.prescriptions import access as rx_access


def is_pharmacist_of(by: User, facility_id: int) -> bool:
    """A pharmacist of that facility's pharmacy."""
    return by.role is Role.PHARMACIST and by.facility_id == facility_id


def can_see_dispense(by: User, dispense: Dispense) -> bool:
    """Its pharmacy's pharmacists, and anyone but another pharmacy's pharmacist who can read the prescription."""
    return is_pharmacist_of(by, dispense.facility_id) or (
        by.role is not Role.PHARMACIST and rx_access.can_read(by, dispense.prescription))


def is_pharmacist(by: User) -> bool:
    """Any pharmacist (their own pharmacy's queue, stock and pickup codes)."""
    return by.role is Role.PHARMACIST
