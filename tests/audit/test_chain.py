"""The audit trail is tamper-evident: sealed events are hash-chained, and an edit made behind the app's back
(as a database superuser, triggers off) is reported at the first broken link, by the admin page and the CLI."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit import chain
from app.audit.models import AuditEvent, AuditLink, AuditSeal, Outcome
from app.cli import main


def _event(**overrides: Any) -> dict[str, Any]:
    return {"occurred_at": db.utcnow(), "action": "test.chain", "outcome": Outcome.SUCCESS,
            "actor_name": "chain test"} | overrides


def _behind_the_apps_back(statement: str, **params: Any) -> None:
    """Run SQL as the superuser with every trigger off (the append-only ones included), as an intruder would."""
    session = db.session()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL session_replication_role = replica"))
        session.execute(sa.text(statement), params)
        session.execute(sa.text("SET LOCAL session_replication_role = origin"))
        session.commit()
    else:
        session.execute(sa.text("DROP TRIGGER IF EXISTS audit_event_no_update"))
        session.execute(sa.text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
        session.execute(sa.text(statement), params)
        session.commit()


def _sealed_trail(client, login, factories) -> tuple[Any, list[int]]:
    """A few real events (sign-in, chart reads), sealed; returns the admin and their ids."""
    admin, nurse, patient = factories.admin(), factories.nurse(), factories.patient()
    login(client, nurse)
    for _ in range(3):
        assert client.get(f"/api/v1/patients/{patient.id}").status_code == 200
    chain.seal()
    db.session.commit()
    ids = list(db.session.scalars(sa.select(AuditEvent.id).where(AuditEvent.patient_id == patient.id,
                                                                 AuditEvent.action == "patient.read")))
    assert len(ids) == 3
    return admin, ids


@pytest.mark.smoke
def test_an_edit_behind_the_apps_back_is_the_first_broken_link(make_client, login, factories):
    staff = make_client()
    admin, ids = _sealed_trail(staff, login, factories)
    assert chain.verify().intact
    _behind_the_apps_back("UPDATE audit_event SET actor_name = 'someone else' WHERE id = :id", id=ids[1])
    _behind_the_apps_back("UPDATE audit_event SET action = 'patient.search' WHERE id = :id", id=ids[2])

    result = chain.verify()
    assert result.first_break is not None
    assert result.first_break.event_id == ids[1]
    assert "changed" in result.first_break.reason

    browser = make_client()
    login(browser, admin)
    page = browser.get("/admin/audit/integrity")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "has been tampered with" in text and f"event #{ids[1]}" in text and " UTC" in text


def test_a_deleted_event_and_a_rewritten_chain_are_detected(client, login, factories):
    _, ids = _sealed_trail(client, login, factories)
    _behind_the_apps_back("DELETE FROM audit_event WHERE id = :id", id=ids[0])
    broken = chain.verify().first_break
    assert broken is not None and broken.event_id == ids[0] and "deleted" in broken.reason


def test_rewriting_the_links_to_match_an_edit_is_caught_by_the_seal(client, login, factories):
    _, ids = _sealed_trail(client, login, factories)
    _behind_the_apps_back("UPDATE audit_event SET actor_name = 'someone else' WHERE id = :id", id=ids[2])
    # The intruder recomputes every link from the edited event on, but cannot forge the seal's head.
    rows = db.session.execute(sa.select(AuditEvent.__table__).where(AuditEvent.id >= ids[2])
                              .order_by(AuditEvent.id)).mappings().all()
    head = db.session.scalar(sa.select(AuditLink.hash).where(AuditLink.event_id < ids[2])
                             .order_by(AuditLink.event_id.desc()).limit(1))
    for row in rows:
        head = chain.link(head, row)
        _behind_the_apps_back("UPDATE audit_link SET hash = :hash WHERE event_id = :id", hash=head, id=row["id"])
    broken = chain.verify().first_break
    assert broken is not None and "rewritten" in broken.reason


def test_intact_trail_on_the_admin_page_and_others_are_refused(make_client, login, factories):
    staff = make_client()
    admin, _ = _sealed_trail(staff, login, factories)
    assert staff.get("/admin/audit/integrity").status_code in (403, 404)
    browser = make_client()
    login(browser, admin)
    text = browser.get("/admin/audit/integrity").get_data(as_text=True)
    assert "The audit trail is intact" in text
    assert db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "audit.verify",
                                                          AuditEvent.actor_id == admin.id)).one()


def test_seal_and_link_rows_are_append_only(client, login, factories):
    _sealed_trail(client, login, factories)
    for statement in ("UPDATE audit_link SET hash = hash", "DELETE FROM audit_seal"):
        nested = db.session.begin_nested()
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            db.session.execute(sa.text(statement))
        nested.rollback()


# ---------------------------------------------------------------- concurrent writers (committed data)


@pytest.fixture
def committed(app, engine):
    """``db.session`` on the real engine: what this test writes is committed, as in production."""
    db.session.remove()
    db.session.configure(bind=engine, join_transaction_mode="rollback_only")
    with app.app_context():
        yield engine
    db.session.remove()


def test_a_seal_never_passes_an_event_whose_transaction_is_still_open(committed):
    engine = committed
    with engine.connect() as slow:
        slow.execute(sa.insert(AuditEvent), _event(action="test.slow"))  # draws the lower id, commits last
        with engine.begin() as quick:
            quick_id = quick.execute(sa.insert(AuditEvent).returning(AuditEvent.id), _event()).scalar_one()
        with pytest.raises(chain.SealWaitTimeout):
            chain.seal(max_wait=0.2)
        db.session.rollback()
        assert db.session.get(AuditLink, quick_id) is None
        slow.commit()
    report = chain.seal(max_wait=5)
    db.session.commit()
    assert report.sealed_through >= quick_id and db.session.get(AuditLink, quick_id) is not None
    result = chain.verify()
    assert result.intact and result.unsealed == 0


def test_sealing_while_many_writers_commit_out_of_order_leaves_no_event_behind(committed):
    engine, stop, errors = committed, threading.Event(), []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                with engine.begin() as conn:
                    conn.execute(sa.insert(AuditEvent), _event(detail={"writer": n, "i": i}))
                    if i % 3 == n % 3:  # some transactions write two events, some hold theirs open a little
                        conn.execute(sa.insert(AuditEvent), _event(detail={"writer": n, "i": i, "second": True}))
                        conn.execute(sa.text("SELECT pg_sleep(0.002)"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    seals = 0
    while any(thread.is_alive() for thread in writers):
        seals += chain.seal(max_wait=5).seals
        db.session.commit()
    for thread in writers:
        thread.join()
    stop.set()
    assert not errors
    chain.seal(max_wait=5)
    db.session.commit()
    result = chain.verify()
    assert result.intact, result.first_break
    assert result.unsealed == 0 and seals >= 2
    unlinked = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).outerjoin(
        AuditLink, AuditLink.event_id == AuditEvent.id).where(AuditLink.event_id.is_(None)))
    assert unlinked == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditSeal)) >= seals


def test_audit_verify_command_reports_an_intact_trail(committed, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["audit-seal"]) == 0
    assert main(["audit-verify"]) == 0
    assert "The audit trail is intact." in capsys.readouterr().out
