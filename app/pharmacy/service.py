"""Pharmacy rules: the dispensing queue, FEFO picking, the MedicationDispense state machine, pickup codes,
handover with an identity check, stock receipt, and the expiry of uncollected medicine.

Only a pharmacist of the prescription's dispensing clinic acts here. The handover is a conditional UPDATE
(``... WHERE status = 'in-progress'``), so two pharmacists clicking at once hand over once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.catalogue import N_
from app.errors import Conflict, Forbidden, TooManyRequests, ValidationFailed
from app.notify import service as notify
from app.patients import access as patient_access
from app.patients import caregivers
from app.patients.models import CaregiverRight
from app.pharmacy import access
from app.pharmacy.models import Dispense, DispensePick, DispenseStatus, Receiver, StockBatch
from app.prescriptions import service as prescriptions
from app.prescriptions.models import Drug, Prescription, RequestStatus

RT = "MedicationDispense"
OPEN = (DispenseStatus.PREPARATION, DispenseStatus.IN_PROGRESS, DispenseStatus.ON_HOLD)
TRANSITIONS: dict[DispenseStatus, set[DispenseStatus]] = {
    DispenseStatus.PREPARATION: {DispenseStatus.IN_PROGRESS, DispenseStatus.ON_HOLD, DispenseStatus.DECLINED,
                                 DispenseStatus.CANCELLED},
    DispenseStatus.IN_PROGRESS: {DispenseStatus.COMPLETED, DispenseStatus.ON_HOLD, DispenseStatus.CANCELLED},
    DispenseStatus.ON_HOLD: {DispenseStatus.PREPARATION, DispenseStatus.DECLINED, DispenseStatus.CANCELLED},
}
"""Allowed MedicationDispense transitions; completed, declined and cancelled are final. in-progress →
completed only through :func:`hand_over`."""
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
MAX_CODE_FAILURES = 20
"""Wrong pickup codes one pharmacist may enter in :data:`CODE_FAILURE_WINDOW` before being made to wait."""
CODE_FAILURE_WINDOW = timedelta(minutes=10)
MAX_STOCK_QUANTITY = 100_000


def _fail(action: str, by: User | None, rx: Prescription, exc: Exception, resource_id: object = None,
          detail: dict[str, Any] | None = None) -> Exception:
    audit.record(action, by=by, outcome=Outcome.FAILURE, patient_id=rx.patient_id, resource_type=RT,
                 resource_id=resource_id, detail=detail or {"error": type(exc).__name__})
    return exc


# ------------------------------------------------------------------ quantities


@dataclass(frozen=True)
class Ledger:
    """What has been supplied against one prescription: units by (fill, dispense status), and when each fill was
    last handed over. :func:`ledgers` loads it for any number of prescriptions in one query, so a list (the
    queue) costs one query rather than several per prescription."""

    units: dict[tuple[int, DispenseStatus], int]
    handed_over: dict[int, datetime]

    def quantity(self, statuses: Sequence[DispenseStatus], fill: int | None = None) -> int:
        return sum(n for (f, status), n in self.units.items() if status in statuses and fill in (None, f))


def ledgers(rx_ids: Sequence[int]) -> dict[int, Ledger]:
    """The :class:`Ledger` of each prescription id, from one grouped query (read now, never cached)."""
    units: dict[int, dict[tuple[int, DispenseStatus], int]] = {rx_id: {} for rx_id in rx_ids}
    handed_over: dict[int, dict[int, datetime]] = {rx_id: {} for rx_id in rx_ids}
    if rx_ids:
        rows = db.session.execute(
            sa.select(Dispense.prescription_id, Dispense.fill, Dispense.status, sa.func.sum(Dispense.quantity),
                      sa.func.max(Dispense.handed_over_at))
            .where(Dispense.prescription_id.in_(rx_ids))
            .group_by(Dispense.prescription_id, Dispense.fill, Dispense.status))
        for rx_id, fill, status, quantity, last in rows:
            units[rx_id][(fill, status)] = int(quantity or 0)
            if status is DispenseStatus.COMPLETED and last is not None:
                handed_over[rx_id][fill] = last
    return {rx_id: Ledger(units[rx_id], handed_over[rx_id]) for rx_id in rx_ids}


def ledger(rx: Prescription) -> Ledger:
    return ledgers([rx.id])[rx.id]


def handed_over_quantity(rx: Prescription, book: Ledger | None = None) -> int:
    return (book or ledger(rx)).quantity([DispenseStatus.COMPLETED])


def remaining(rx: Prescription, book: Ledger | None = None) -> int:
    """Units authorised (quantity × (1 + refills)) not yet handed over or set aside."""
    return rx.total_authorised - (book or ledger(rx)).quantity([DispenseStatus.COMPLETED, *OPEN])


@dataclass(frozen=True)
class Progress:
    prescribed: int
    dispensed: int
    in_hand: int
    remaining: int
    unit: str = "unit"

    def wording(self) -> str:
        """The one sentence patient, doctor and pharmacist read, so a prescription never reads two ways."""
        left = self.prescribed - self.dispensed
        units = units_of(self.unit, self.prescribed)
        if left <= 0:
            return f"{'All ' if self.prescribed > 1 else ''}{self.prescribed} {units} collected"
        text = f"{left} of {self.prescribed} {units} still to collect"
        if self.in_hand:
            text += f", {self.in_hand} of them ready or being prepared"
        return text


def units_of(form: str, count: int) -> str:
    """"1 tablet", "2 tablets": the dose form counted in plain words."""
    return form if count == 1 else f"{form}s"


def progress(rx: Prescription, book: Ledger | None = None) -> Progress:
    book = book or ledger(rx)
    done = book.quantity([DispenseStatus.COMPLETED])
    open_qty = book.quantity(OPEN)
    return Progress(prescribed=rx.total_authorised, dispensed=done, in_hand=open_qty,
                    remaining=rx.total_authorised - done - open_qty, unit=rx.drug.form)


def _next_fill(rx: Prescription, book: Ledger | None = None) -> tuple[int, int]:
    """The fill to supply next and how many units it still lacks (a short fill is topped up first)."""
    book = book or ledger(rx)
    for fill in range(rx.refills + 1):
        supplied = book.quantity([DispenseStatus.COMPLETED, *OPEN], fill)
        if supplied < rx.quantity:
            return fill, rx.quantity - supplied
    return rx.refills + 1, 0


REFILL_AFTER_FRACTION = 0.75
"""A refill is due once three quarters of the previous supply's duration have passed since its handover."""


def refill_due(rx: Prescription, book: Ledger | None = None) -> date | None:
    """The first day the next supply may be prepared, or None if it may be prepared now."""
    book = book or ledger(rx)
    fill, owed = _next_fill(rx, book)
    if fill == 0 or owed < rx.quantity:
        return None  # the first supply, or topping up a short one
    last = book.handed_over.get(fill - 1)
    if last is None:
        return None
    due = (last + timedelta(days=rx.duration_days * REFILL_AFTER_FRACTION)).date()
    return due if due > db.utcnow().date() else None


def pickup_deadline(dispense: Dispense) -> date | None:
    if dispense.status is not DispenseStatus.IN_PROGRESS or dispense.ready_at is None:
        return None
    return (dispense.ready_at + timedelta(days=current_app.config["PICKUP_DEADLINE_DAYS"])).date()


# ------------------------------------------------------------------ reads


def dispenses_for(rx: Prescription) -> list[Dispense]:
    return list(db.session.scalars(sa.select(Dispense).where(Dispense.prescription_id == rx.id)
                                   .order_by(Dispense.id)))


def get_dispense(dispense_id: int, *, by: User, action: str = "dispense.read", audit_read: bool = True) -> Dispense:
    """A dispense for its pharmacy's pharmacists, the patient, or staff who can read the prescription.

    :raises NotFound: unknown or not visible (audited).
    """
    dispense = db.session.get(Dispense, dispense_id)
    if dispense is None or not access.can_see_dispense(by, dispense):
        audit.forbid(action, by=by, patient_id=dispense.prescription.patient_id if dispense else None,
                     resource_type=RT, resource_id=dispense_id)
    assert dispense is not None
    if audit_read:
        audit.record(action, by=by, patient_id=dispense.prescription.patient_id, resource_type=RT,
                     resource_id=dispense.id)
    return dispense


@dataclass
class Queue:
    to_prepare: list[Prescription]
    by_status: dict[DispenseStatus, list[Dispense]]
    progress: dict[int, Progress]
    """The progress of each prescription to prepare, by its id."""


def queue(*, by: User) -> Queue:
    """The pharmacy's work: signed prescriptions with units left, and dispenses by status."""
    if not access.is_pharmacist(by):
        audit.forbid("pharmacy.queue", by=by, resource_type=RT,
                     error=Forbidden("Only pharmacists see the dispensing queue."))
    open_rx = sa.select(Dispense.prescription_id).where(Dispense.status.in_(OPEN))
    candidates = list(db.session.scalars(sa.select(Prescription).where(
        Prescription.dispensing_facility_id == by.facility_id, Prescription.status == RequestStatus.ACTIVE,
        Prescription.id.not_in(open_rx)).order_by(Prescription.signed_at)))
    books = ledgers([rx.id for rx in candidates])
    to_prepare = [rx for rx in candidates if remaining(rx, books[rx.id]) > 0 and refill_due(rx, books[rx.id]) is None]
    by_status: dict[DispenseStatus, list[Dispense]] = {s: [] for s in DispenseStatus}
    since = db.utcnow() - timedelta(days=14)
    for d in db.session.scalars(sa.select(Dispense).where(
            Dispense.facility_id == by.facility_id,
            sa.or_(Dispense.status.in_(OPEN), Dispense.updated_at >= since)).order_by(Dispense.id.desc()).limit(500)):
        by_status[d.status].append(d)
    audit.record("pharmacy.queue", by=by, resource_type=RT,
                 detail={"to_prepare": [rx.id for rx in to_prepare]})
    return Queue(to_prepare=to_prepare, by_status=by_status,
                 progress={rx.id: progress(rx, books[rx.id]) for rx in to_prepare})


# ------------------------------------------------------------------ preparing


def start_dispense(rx: Prescription, *, by: User, quantity: int | None = None) -> Dispense:
    """Pick stock first-expiring-first for the next fill and put it in preparation.

    Gives what the shelf holds when stock is short (a partial dispense; the rest follows later).

    :raises NotFound: not this pharmacy's prescription. :raises Conflict: not active, already being dispensed,
        fully dispensed, a refill before it is due, or out of stock.
    :raises ValidationFailed: a quantity outside 1..what is owed.
    """
    if not access.is_pharmacist_of(by, rx.dispensing_facility_id) or rx.status is RequestStatus.DRAFT:
        audit.forbid("dispense.create", by=by, patient_id=rx.patient_id, resource_type=RT)
    # Lock the prescription row: two pharmacists starting at once create one dispense.
    db.session.execute(sa.select(Prescription.id).where(Prescription.id == rx.id).with_for_update())
    if rx.status is not RequestStatus.ACTIVE:
        raise _fail("dispense.create", by, rx, Conflict(gettext("The prescription is %(status)s.",
                                                            status=gettext(rx.status.value))))
    if db.session.scalar(sa.select(Dispense.id).where(Dispense.prescription_id == rx.id,
                                                      Dispense.status.in_(OPEN))) is not None:
        raise _fail("dispense.create", by, rx, Conflict("This prescription is already being dispensed."))
    fill, owed = _next_fill(rx)
    if owed <= 0:
        raise _fail("dispense.create", by, rx, Conflict("Everything prescribed has been dispensed."))
    due = refill_due(rx)
    if due is not None:
        raise _fail("dispense.create", by, rx, Conflict(gettext("Refill too early: due from %(date)s.",
                                                                  date=due.isoformat())),
                    detail={"error": "refill-too-early", "due": due.isoformat()})
    if quantity is not None:
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not (1 <= quantity <= owed):
            raise _fail("dispense.create", by, rx, ValidationFailed(
                N_("Some fields need attention."),
                errors={"quantity": [gettext("Dispense from 1 to %(owed)d units (what this fill still lacks).",
                                              owed=owed)]}),
                detail={"error": "quantity", "owed": owed})
        owed = quantity
    batches = db.session.scalars(sa.select(StockBatch).where(
        StockBatch.facility_id == rx.dispensing_facility_id, StockBatch.drug_id == rx.drug_id,
        StockBatch.quantity > 0, StockBatch.expires_on > date.today())
        .order_by(StockBatch.expires_on, StockBatch.id).with_for_update(of=StockBatch))
    dispense = Dispense(prescription=rx, facility_id=rx.dispensing_facility_id, fill=fill,
                        status=DispenseStatus.PREPARATION, quantity_requested=owed, quantity=0,
                        prepared_by_id=by.id)
    picked = 0
    for batch in batches:
        take = min(batch.quantity, owed - picked)
        batch.quantity -= take
        dispense.picks.append(DispensePick(batch=batch, quantity=take))
        picked += take
        if picked == owed:
            break
    if picked == 0:
        raise _fail("dispense.create", by, rx, Conflict(gettext("No unexpired stock of %(drug)s here.",
                                                                  drug=rx.drug.display)),
                    detail={"error": "out-of-stock"})
    dispense.quantity = picked
    db.session.add(dispense)
    db.session.flush()
    audit.record("dispense.create", by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=dispense.id,
                 detail={"fill": fill, "requested": owed, "picked": picked,
                         "batches": [[p.batch_id, p.quantity] for p in dispense.picks]})
    return dispense


def _return_stock(dispense: Dispense) -> None:
    for pick in dispense.picks:
        pick.batch.quantity = StockBatch.quantity + pick.quantity  # evaluated in SQL: safe beside other picks
    db.session.flush()


def _pickup_code(dispense: Dispense) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    digest = hmac.new(key, f"pickup|{dispense.id}|{dispense.pickup_salt}".encode(), hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(8):
        n, r = divmod(n, len(CODE_ALPHABET))
        chars.append(CODE_ALPHABET[r])
    return "".join(chars[:4]) + "-" + "".join(chars[4:])


def _code_hash(code: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    normal = "".join(c for c in code.upper() if c.isalnum())
    return hmac.new(key, f"pickup-hash|{normal}".encode(), hashlib.sha256).hexdigest()


def pickup_code(dispense: Dispense, *, by: User, through_app: bool = False) -> str | None:
    """The one-time code, only for the patient (or their caregiver acting for them with the right to collect
    medicine) and only while the medicine waits at the counter.

    The database keeps a keyed hash; the code itself is derived with the server secret, so a database copy
    alone cannot produce a usable code. ``through_app``: the request came from a third-party app with an
    OAuth token, which never gets the code: it is the patient's proof of identity at the pharmacy counter.
    """
    if through_app or dispense.status is not DispenseStatus.IN_PROGRESS or dispense.pickup_salt is None:
        return None
    patient = dispense.prescription.patient
    if not (by.role is Role.PATIENT and (patient.user_id == by.id
                                         or patient_access.may_act_for(by, patient, CaregiverRight.MEDICINE))):
        return None
    return _pickup_code(dispense)


def transition(dispense: Dispense, target: DispenseStatus | str, *, by: User | None,
               reason: str | None = None) -> Dispense:
    """Move a dispense along the MedicationDispense state machine (not to completed: see :func:`hand_over`).

    ``by=None`` is the expiry job. :raises Conflict: transition not allowed (audited).
    :raises ValidationFailed: declining or cancelling without a reason.
    """
    rx = dispense.prescription
    if by is not None and not access.is_pharmacist_of(by, dispense.facility_id):
        audit.forbid("dispense.status", by=by, patient_id=rx.patient_id, resource_type=RT,
                     resource_id=dispense.id)
    try:
        target = DispenseStatus(target)
    except ValueError:
        raise _fail("dispense.status", by, rx, ValidationFailed(
            N_("Some fields need attention."), errors={"status": [N_("Unknown status.")]}), dispense.id) from None
    if target is DispenseStatus.COMPLETED or target not in TRANSITIONS.get(dispense.status, set()):
        raise _fail("dispense.status", by, rx, Conflict(
            gettext("A dispense cannot go from %(old)s to %(new)s. Hand it over with the pickup code.",
                    old=dispense.status.label.lower(), new=target.label.lower()) if target is DispenseStatus.COMPLETED
            else gettext("A dispense cannot go from %(old)s to %(new)s.", old=dispense.status.label.lower(),
                         new=target.label.lower())),
            dispense.id, {"from": dispense.status.value, "to": target.value})
    reason = (reason or "").strip()[:300] or None
    if target in (DispenseStatus.DECLINED, DispenseStatus.CANCELLED) and reason is None:
        raise _fail("dispense.status", by, rx, ValidationFailed(
            N_("Some fields need attention."), errors={"reason": [N_("Give a reason.")]}), dispense.id)
    if target is DispenseStatus.IN_PROGRESS and rx.status is not RequestStatus.ACTIVE:
        raise _fail("dispense.status", by, rx, Conflict(gettext("The prescription is %(status)s.",
                                                            status=gettext(rx.status.value))), dispense.id)
    # Guard against a concurrent change: the row must still be in the status we read.
    previous = dispense.status
    values: dict[str, Any] = {"status": target, "status_reason": reason, "updated_at": db.utcnow()}
    if target is DispenseStatus.IN_PROGRESS:
        values.update(ready_at=db.utcnow(), pickup_salt=secrets.token_hex(8))
    changed = db.session.execute(sa.update(Dispense).where(Dispense.id == dispense.id, Dispense.status == previous)
                                 .values(**values).execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise _fail("dispense.status", by, rx, Conflict("Someone else changed this dispense; reload."), dispense.id)
    db.session.refresh(dispense)
    if target is DispenseStatus.IN_PROGRESS:
        dispense.pickup_code_hash = _code_hash(_pickup_code(dispense))
    if target in (DispenseStatus.DECLINED, DispenseStatus.CANCELLED):
        _return_stock(dispense)
    db.session.flush()
    audit.record("dispense.status", by=by, actor_name=None if by else "system", patient_id=rx.patient_id,
                 resource_type=RT, resource_id=dispense.id, detail={"from": previous.value, "to": target.value})
    _notify_status(dispense, target)
    return dispense


def _notify_status(dispense: Dispense, status: DispenseStatus) -> None:
    rx = dispense.prescription
    patient_user = rx.patient.user
    place = dispense.facility.name
    if status is DispenseStatus.IN_PROGRESS and patient_user is not None:
        notify.enqueue(recipient=patient_user, subject=notify.Message("Your medicine is ready for pickup"),
                       body=notify.Message("Your medicine is ready at %(place)s. Open \"My prescriptions\" for your "
                                           "one-time pickup code and bring an ID document. Collect it within "
                                           "%(days)s days.", place=place,
                                           days=current_app.config["PICKUP_DEADLINE_DAYS"]))
    elif status is DispenseStatus.CANCELLED:
        if patient_user is not None:
            notify.enqueue(recipient=patient_user, subject=notify.Message("Medicine not collected"),
                           body=notify.Message("A medicine waiting for you at %(place)s was cancelled (%(reason)s). "
                                               "Contact the clinic or your doctor.", place=place,
                                               reason=dispense.status_reason))
        notify.enqueue(recipient=rx.prescriber,
                       subject=notify.Message("Dispense cancelled for prescription #%(id)s", id=rx.id),
                       body=notify.Message("Dispense #%(id)s at %(place)s was cancelled: %(reason)s.", id=dispense.id,
                                           place=place, reason=dispense.status_reason))
    elif status is DispenseStatus.DECLINED and patient_user is not None:
        notify.enqueue(recipient=patient_user, subject=notify.Message("The pharmacy could not dispense a medicine"),
                       body=notify.Message("The pharmacy at %(place)s declined a dispense. Your doctor has been "
                                           "told.", place=place))
        notify.enqueue(recipient=rx.prescriber,
                       subject=notify.Message("Dispense declined for prescription #%(id)s", id=rx.id),
                       body=notify.Message("Reason: %(reason)s", reason=dispense.status_reason))


def cancel_open_dispenses(rx: Prescription, *, by: User, reason: str) -> None:
    """When a prescription is stopped or cancelled, nothing set aside for it may still be handed over."""
    for dispense in db.session.scalars(sa.select(Dispense).where(Dispense.prescription_id == rx.id,
                                                                Dispense.status.in_(OPEN))):
        values = {"status": DispenseStatus.CANCELLED, "status_reason": reason, "updated_at": db.utcnow()}
        if db.session.execute(sa.update(Dispense).where(Dispense.id == dispense.id, Dispense.status.in_(OPEN))
                              .values(**values).execution_options(synchronize_session=False)).rowcount:
            _return_stock(dispense)
            audit.record("dispense.status", by=by, patient_id=rx.patient_id, resource_type=RT,
                         resource_id=dispense.id, detail={"to": "cancelled", "reason": reason})


# ------------------------------------------------------------------ pickup


def normalise_code(code: str | None) -> str | None:
    """A pickup code as typed or scanned (any case, spaces, dashes) in its stored form; None if it cannot be one."""
    normal = "".join(c for c in (code or "").upper() if c.isascii() and c.isalnum())
    return normal if len(normal) == 8 else None


def find_by_code(code: str, *, by: User) -> Dispense:
    """The dispense waiting at this pharmacy for a pickup code.

    :raises ValidationFailed: unknown, forged, other pharmacy's, or already used code (audited; one answer).
    """
    if not access.is_pharmacist(by):
        audit.forbid("dispense.pickup_lookup", by=by, resource_type=RT)
    _throttle_code_guessing(by)
    normal = normalise_code(code)
    dispense = None
    if normal is not None:
        dispense = db.session.scalar(sa.select(Dispense).where(Dispense.pickup_code_hash == _code_hash(normal),
                                                               Dispense.facility_id == by.facility_id))
    if dispense is None or dispense.status is not DispenseStatus.IN_PROGRESS:
        audit.record("dispense.pickup_lookup", by=by, outcome=Outcome.FAILURE, resource_type=RT,
                     resource_id=dispense.id if dispense else None,
                     patient_id=dispense.prescription.patient_id if dispense else None,
                     detail={"error": "used" if dispense else "unknown"})
        message = ("This code was already used or the medicine is no longer waiting." if dispense
                   else "No medicine is waiting here for this code.")
        raise ValidationFailed("The pickup code is not valid.", errors={"code": [message]})
    audit.record("dispense.pickup_lookup", by=by, patient_id=dispense.prescription.patient_id, resource_type=RT,
                 resource_id=dispense.id)
    return dispense


def _throttle_code_guessing(by: User) -> None:
    """Codes have about 40 bits; still, a counter that keeps entering wrong codes is stopped for a while."""
    from app.audit.models import AuditEvent

    failures = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.actor_id == by.id, AuditEvent.outcome == Outcome.FAILURE,
        AuditEvent.action.in_(["dispense.pickup_lookup", "dispense.handover"]),
        AuditEvent.occurred_at >= db.utcnow() - CODE_FAILURE_WINDOW)) or 0
    if failures >= MAX_CODE_FAILURES:
        audit.forbid("dispense.pickup_lookup", by=by, resource_type=RT,
                     detail={"error": "throttled"},
                     error=TooManyRequests("Too many wrong pickup codes; wait a few minutes.",
                                           headers={"Retry-After": str(int(CODE_FAILURE_WINDOW.total_seconds()))}))


@dataclass
class Handover:
    code: str
    id_document: str
    receiver: str = "patient"
    proxy_name: str | None = None
    proxy_relation: str | None = None
    caregiver_link_id: int | None = None
    """A registered caregiver of the patient collects: their name and relationship come from the link."""


def hand_over(dispense_id: int, data: Handover, *, by: User) -> Dispense:
    """Give the medicine to the patient or a named proxy after checking the code and an ID document.

    :raises ValidationFailed: wrong code or missing identity details (audited).
    :raises Conflict: already handed over, e.g. by a colleague a moment ago (audited).
    """
    dispense = get_dispense(dispense_id, by=by, action="dispense.handover", audit_read=False)
    rx = dispense.prescription
    if not access.is_pharmacist_of(by, dispense.facility_id):
        audit.forbid("dispense.handover", by=by, patient_id=rx.patient_id, resource_type=RT,
                     resource_id=dispense.id)
    _throttle_code_guessing(by)
    errors: dict[str, list[str]] = {}
    id_document = (data.id_document or "").strip()
    if not id_document:
        errors["id_document"] = ["Check an ID document and name it (e.g. national ID card)."]
    try:
        receiver = Receiver(data.receiver)
    except ValueError:
        errors["receiver"] = ["Choose patient or proxy."]
        receiver = Receiver.PATIENT
    proxy_name = (data.proxy_name or "").strip() or None
    proxy_relation = (data.proxy_relation or "").strip() or None
    link = None
    if data.caregiver_link_id is not None:
        link = caregivers.for_pickup(rx.patient, data.caregiver_link_id)
        if link is None:
            errors["receiver"] = ["This person is not, or no longer, a caregiver allowed to collect the patient's "
                                  "medicine."]
        else:
            receiver = Receiver.PROXY
            proxy_name, proxy_relation = link.caregiver.full_name, link.relationship.value.replace("_", " ")
    if receiver is Receiver.PROXY:
        if not proxy_name:
            errors["proxy_name"] = ["Name the person collecting."]
        if not proxy_relation:
            errors["proxy_relation"] = ["Give their relation to the patient."]
    else:
        proxy_name = proxy_relation = None
    code_ok = dispense.pickup_code_hash is not None and hmac.compare_digest(
        dispense.pickup_code_hash, _code_hash(data.code or ""))
    if not code_ok:
        errors["code"] = ["The pickup code does not match this medicine."]
    if errors:
        raise _fail("dispense.handover", by, rx, ValidationFailed("Some fields need attention.", errors=errors),
                    dispense.id, {"fields": sorted(errors)})
    if rx.status is not RequestStatus.ACTIVE:
        raise _fail("dispense.handover", by, rx, Conflict(gettext("The prescription is %(status)s.",
                                                            status=gettext(rx.status.value))), dispense.id)
    now = db.utcnow()
    changed = db.session.execute(
        sa.update(Dispense).where(Dispense.id == dispense.id, Dispense.status == DispenseStatus.IN_PROGRESS)
        .values(status=DispenseStatus.COMPLETED, handed_over_at=now, handed_over_by_id=by.id, receiver=receiver,
                proxy_name=(proxy_name or "")[:120] or None, proxy_relation=(proxy_relation or "")[:60] or None,
                id_document=id_document[:60], caregiver_link_id=link.id if link else None, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise _fail("dispense.handover", by, rx, Conflict("This medicine has already been handed over."),
                    dispense.id, {"error": "already-handed-over"})
    db.session.refresh(dispense)
    if handed_over_quantity(rx) >= rx.total_authorised:
        prescriptions.mark_completed(rx)
    db.session.flush()
    audit.record("dispense.handover", by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=dispense.id,
                 detail={"receiver": receiver.value, "quantity": dispense.quantity,
                         **({"caregiver_link_id": link.id, "caregiver_id": link.caregiver_id} if link else {})})
    if rx.patient.user is not None:
        notify.enqueue(recipient=rx.patient.user, subject=notify.Message("Medicine collected"),
                       body=notify.Message("%(quantity)s units were handed over at %(place)s to you.",
                                           quantity=dispense.quantity, place=dispense.facility.name)
                       if receiver is Receiver.PATIENT else
                       notify.Message("%(quantity)s units were handed over at %(place)s to your named proxy.",
                                      quantity=dispense.quantity, place=dispense.facility.name))
    return dispense


# ------------------------------------------------------------------ stock and expiry


def stock(*, by: User) -> list[StockBatch]:
    if not access.is_pharmacist(by):
        audit.forbid("pharmacy.stock", by=by, resource_type="StockBatch")
    return list(db.session.scalars(sa.select(StockBatch).where(StockBatch.facility_id == by.facility_id)
                                   .join(Drug).order_by(Drug.name, StockBatch.expires_on, StockBatch.id)))


def receive_stock(*, by: User, drug_id: int, lot: str, expires_on: date, quantity: int) -> StockBatch:
    """Book a delivered batch into this pharmacy. :raises ValidationFailed: unknown drug, bad lot/expiry/quantity."""
    if not access.is_pharmacist(by):
        audit.forbid("pharmacy.stock", by=by, resource_type="StockBatch")
    errors: dict[str, list[str]] = {}
    drug = db.session.get(Drug, drug_id) if isinstance(drug_id, int) and not isinstance(drug_id, bool) else None
    if drug is None:
        errors["drug_id"] = ["Choose a drug from the formulary."]
    lot = (lot or "").strip()
    if not lot or len(lot) > 40:
        errors["lot"] = ["Enter the lot number (at most 40 characters)."]
    if not isinstance(expires_on, date) or expires_on <= date.today():
        errors["expires_on"] = ["The batch must expire in the future."]
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not (1 <= quantity <= MAX_STOCK_QUANTITY):
        errors["quantity"] = [f"Enter a whole number from 1 to {MAX_STOCK_QUANTITY}."]
    if errors:
        audit.record("pharmacy.stock", by=by, outcome=Outcome.FAILURE, resource_type="StockBatch",
                     detail={"fields": sorted(errors)})
        raise ValidationFailed("Some fields need attention.", errors=errors)
    batch = StockBatch(facility_id=by.facility_id, drug_id=drug_id, lot=lot, expires_on=expires_on,
                       quantity=quantity)
    db.session.add(batch)
    db.session.flush()
    audit.record("pharmacy.stock", by=by, resource_type="StockBatch", resource_id=batch.id,
                 detail={"drug": drug.code if drug else None, "quantity": quantity})
    return batch


def expire_uncollected(*, now: datetime | None = None, deadline_days: int | None = None) -> list[int]:
    """Cancel medicine that waited longer than the pickup deadline; stock returns to the shelf, the patient and
    the doctor are notified. Returns the cancelled dispense ids (the caller commits)."""
    now = now or db.utcnow()
    days = deadline_days if deadline_days is not None else current_app.config["PICKUP_DEADLINE_DAYS"]
    cutoff = now - timedelta(days=days)
    ids = list(db.session.scalars(sa.select(Dispense.id).where(Dispense.status == DispenseStatus.IN_PROGRESS,
                                                               Dispense.ready_at < cutoff)))
    done = []
    for dispense_id in ids:
        dispense = db.session.get(Dispense, dispense_id)
        assert dispense is not None
        try:
            transition(dispense, DispenseStatus.CANCELLED, by=None,
                       reason=f"not collected within {days} days")
        except Conflict:
            continue  # handed over meanwhile
        done.append(dispense_id)
    return done
