"""Who may do what with scans: the imaging domain's authorisation rules.

Who may *see* a study is :func:`app.imaging.service.visible_clause` (a query clause on the read path).
"""

from __future__ import annotations

from app.auth.models import Role, User
from app.imaging.models import Study

INGEST_ROLES = (Role.CLINIC_STAFF,)


def can_ingest(user: User | None) -> bool:
    """Clinic staff send scans; ``None`` is a trusted system sender (the DICOM listener)."""
    return user is None or user.role in INGEST_ROLES


def reconciles_scans(user: User) -> bool:
    """Clinic staff file the scans their clinic sent onto charts."""
    return user.role is Role.CLINIC_STAFF


def can_reconcile(study: Study, user: User) -> bool:
    """Whether ``user`` may move or unlink ``study`` (staff of the clinic that sent it)."""
    return reconciles_scans(user) and study.facility_id == user.facility_id
