"""Two doctors click "Claim" at the same moment, each on their own PostgreSQL connection: one gets the request,
the other is told who has it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from app import db
from app.auth.models import User
from app.errors import Conflict
from app.reading import service
from app.reading.models import ReadingRequest
from tests.reading.conftest import store_study


def test_two_doctors_claim_at_once_one_wins_the_other_is_told_who(app: Flask, live_factories: Any) -> None:
    if db.session.get_bind().dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL row locking")
    nurse = live_factories.nurse()
    patient = live_factories.patient()
    study = store_study(nurse, patient, slices=1)
    req = service.request_reading(study, by=nurse, question="Fracture?", priority="stat")
    db.session.commit()
    doctors = [live_factories.doctor(name="Dr Race One"), live_factories.doctor(name="Dr Race Two")]
    request_id, doctor_ids = req.id, [d.id for d in doctors]
    db.session.remove()
    barrier = threading.Barrier(2, timeout=10)
    outcomes: dict[int, Any] = {}

    def click(doctor_id: int) -> None:
        with app.app_context():
            try:
                doctor = db.session.get(User, doctor_id)
                mine = db.session.get(ReadingRequest, request_id)
                assert doctor is not None and mine is not None
                db.session.connection()  # each thread holds its own connection before the race
                barrier.wait()
                service.claim(mine, by=doctor)
                db.session.commit()
                outcomes[doctor_id] = "won"
            except Conflict as exc:
                db.rollback()
                outcomes[doctor_id] = exc.detail
            finally:
                db.session.remove()

    threads = [threading.Thread(target=click, args=(d,)) for d in doctor_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(v == "won" for v in outcomes.values()) == [False, True], outcomes
    winner = next(d for d in doctor_ids if outcomes[d] == "won")
    loser = next(d for d in doctor_ids if d != winner)
    winner_name = "Dr Race One" if winner == doctor_ids[0] else "Dr Race Two"
    assert outcomes[loser].startswith(f"{winner_name} took this request at ")
    assert outcomes[loser].endswith(" UTC.")  # the zone is named
    with app.app_context():
        stored = db.session.get(ReadingRequest, request_id)
        assert stored is not None and stored.claimed_by_id == winner
        db.session.remove()
