"""Prescription signing / QR and the dispensing cycle, timed.

    .venv/bin/python benchmarks/pharmacy.py [--n 200]

Creates a throw-away PostgreSQL database (TEST_PG_ADMIN_URL, default postgres@127.0.0.1), migrates it, and
runs N prescriptions through draft → sign → prepare (FEFO) → ready → handover with the real services.
Prints a table; not run by the test suite.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta

import qrcode
import qrcode.image.svg
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(name: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(f"| {name:<34} | {len(samples):>5} | {statistics.median(samples):>8.3f} | {p95:>8.3f} | "
          f"{1000 / statistics.mean(samples):>9.0f} |")


def crypto_rows(n: int) -> None:
    from app.prescriptions import signing

    key = Ed25519PrivateKey.generate()
    doc = {"v": 1, "id": 1, "patient": {"id": 1, "mrn": "12345674", "name": "Maria Gonzalez"},
           "drug": {"code": "AMOX500", "name": "Amoxicillin"}, "quantity": 21, "refills": 2, "instructions": "x" * 80}
    payloads = []

    def sign() -> None:
        payloads.append(signing.sign(dict(doc, id=len(payloads)), key)[2])

    row("Ed25519 sign (canonical JSON)", timed(sign, n))
    it = iter(payloads)
    row("Ed25519 verify QR payload", timed(lambda: signing.verify_payload(next(it), key.public_key()), n))

    def qr() -> None:
        buf = io.BytesIO()
        qrcode.make(payloads[0], image_factory=qrcode.image.svg.SvgPathImage).save(buf)

    row("QR SVG render (prescription)", timed(qr, max(20, n // 10)))
    print(f"\nQR payload length: {len(payloads[0])} characters")


def db_rows(n: int) -> None:
    from app import db
    from app.pharmacy import service as pharmacy
    from app.pharmacy.models import DispenseStatus, StockBatch
    from app.prescriptions import service as rx
    from app.prescriptions.models import Drug
    from benchmarks.scratch import scratch_app
    from tests.factories import Factories

    with scratch_app() as app, app.test_request_context("/"):
        f = Factories()
        doctor, pharmacist = f.doctor(), f.pharmacist()
        amox = db.session.scalar(sa.select(Drug).where(Drug.code == "AMOX500"))
        for days in range(30, 30 + 20):
            db.session.add(StockBatch(facility_id=f.clinic.id, drug_id=amox.id, lot=f"B{days}",
                                      expires_on=date.today() + timedelta(days=days), quantity=n * 2))
        patients = [f.patient(doctor=doctor, with_account=True) for _ in range(n)]
        db.session.commit()
        results: dict[str, list[float]] = {k: [] for k in ("draft + checks", "sign", "prepare (FEFO pick)",
                                                           "mark ready (+notify)", "pickup lookup", "handover")}

        class Step:
            """Time a block and commit it, like a request would."""

            def __init__(self, name: str) -> None:
                self.name = name

            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                db.session.commit()
                results[self.name].append((time.perf_counter() - self.t0) * 1000)

        for p in patients:
            data = rx.PrescriptionInput(drug_id=amox.id, dose_units=1, frequency_per_day=3, duration_days=7,
                                        quantity=21)
            with Step("draft + checks"):
                r = rx.create_draft(p, data, by=doctor)
                rx.findings(r)
            with Step("sign"):
                rx.sign(r, by=doctor)
            with Step("prepare (FEFO pick)"):
                d = pharmacy.start_dispense(r, by=pharmacist)
            with Step("mark ready (+notify)"):
                pharmacy.transition(d, DispenseStatus.IN_PROGRESS, by=pharmacist)
            code = pharmacy.pickup_code(d, by=p.user)
            with Step("pickup lookup"):
                pharmacy.find_by_code(code, by=pharmacist)
            with Step("handover"):
                pharmacy.hand_over(d.id, pharmacy.Handover(code=code, id_document="ID"), by=pharmacist)
        for key, samples in results.items():
            row(f"PostgreSQL: {key}", samples)
        db.session.remove()
        app.extensions["db_engine"].dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print("| operation                          |     n |  p50 ms  |  p95 ms  |   ops/s   |")
    print("|------------------------------------|-------|----------|----------|-----------|")
    crypto_rows(args.n * 10)
    db_rows(args.n)


if __name__ == "__main__":
    main()
