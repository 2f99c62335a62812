"""Fixtures shared by the imaging tests."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.imaging.models import DicomPeer
from app.imaging.scp import Listener
from tests.imaging.dimse import free_port


@pytest.fixture
def listener(app: Any, live_factories: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A listener on a free port; the scanner CLINICCT of a new clinic may store, query, retrieve, worklist.

    Peers are read for each association (no cache here), so a test may change them while it runs.
    """
    clinic = live_factories.facility(name="Scanner clinic")
    db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title == "CLINICCT"))  # left by an earlier test
    db.session.add(DicomPeer(ae_title="CLINICCT", facility_id=clinic.id, can_store=True, can_query=True,
                             can_retrieve=True, can_worklist=True, active=True))
    db.session.commit()
    monkeypatch.setitem(app.config, "DICOM_ALLOWED_AETS", "")
    port = free_port()
    server = Listener(app, peer_cache_seconds=0).serve("127.0.0.1", port, block=False)
    yield port, clinic
    server.shutdown()
