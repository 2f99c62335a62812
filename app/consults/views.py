"""Consult pages: appointments, booking, availability, the doctor's day, the waiting room, the consult room."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import get_day_names
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import get_locale, get_timezone
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app import db, i18n
from app.auth.decorators import roles_required
from app.auth.models import Role, User
from app.consults import history, picker, service, summaries
from app.consults.models import Appointment, AppointmentStatus, ParticipantKind
from app.errors import AppError, ValidationFailed
from app.patients import access as patient_access
from app.patients import service as patients
from app.patients.models import CaregiverRight

bp = Blueprint("consults", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/consults")


def weekdays() -> list[str]:
    """Monday to Sunday (``Availability.weekday`` 0 to 6), named in the reader's language."""
    names = get_day_names("wide", locale=get_locale())
    return [names[i] for i in range(7)]


def chart_links(patient: object, user: User) -> list[dict[str, str]]:
    if user.role is Role.CLINIC_STAFF:
        return [{"label": "Book video consult", "url": url_for("consults.book", patient_id=patient.id)}]
    return []




@bp.app_template_global()
def visit_history(patient: Any) -> list[history.VisitEntry]:
    """The chart's visit history (the chart read itself is audited by the chart page)."""
    if not current_user.is_authenticated:
        return []
    return history.visit_history(patient, by=current_user)


@bp.app_template_global()
def can_read_visit_history(patient: Any) -> bool:
    return current_user.is_authenticated and history.visible_to(current_user, patient)


def _flash_error(exc: AppError) -> None:
    db.rollback()
    messages = [m for msgs in (exc.errors or {}).values() for m in msgs]
    # A validation failure's field hints say what to fix (its detail is the generic "Some fields need attention"),
    # in whatever language they were translated to; other failures explain themselves in their detail.
    flash(" ".join(messages) if isinstance(exc, ValidationFailed) and messages else exc.detail, "error")


@bp.get("/consults")
@roles_required(Role.PATIENT, Role.CLINIC_STAFF, Role.DOCTOR)
def index() -> str:
    """Upcoming video consults of the patient, or of the clinic's patients."""
    appointments = service.list_for(current_user)
    return render_template("consults/index.html", appointments=appointments, AppointmentStatus=AppointmentStatus)


@bp.route("/consults/book", methods=["GET", "POST"])
@roles_required(Role.PATIENT, Role.CLINIC_STAFF)
def book() -> Response | str:
    """Choose a doctor, then a free slot."""
    if current_user.role is Role.PATIENT:
        patient = patients.get_own_record(by=current_user, right=CaregiverRight.BOOK, action="appointment.create")
        if patient is None:
            flash(_("No patient record is linked to your account yet; ask your clinic."), "error")
            return redirect(url_for("consults.index"))
    else:
        patient = patients.get_patient(request.values.get("patient_id", 0, type=int), by=current_user)
    doctor_id = request.values.get("doctor_id", type=int)
    start = picker.parse_start(request.values.get("start"))
    if request.method == "POST":
        done = _confirm_slot(start, lambda when: service.book(
            patient=patient, doctor_id=doctor_id or 0, start=when, by=current_user,
            reason=request.form.get("reason")), _("Booked: video consult on %(when)s with %(doctor)s. "
                                                   "A confirmation is in your notifications."))
        if done:
            return done
    doctors = service.bookable_doctors()
    doctor = next((d for d in doctors if d.id == doctor_id), None)
    slots = service.open_slots(doctor, days=14) if doctor else []
    return render_template("consults/book.html", patient=patient, doctors=doctors, doctor=doctor,
                           **_picker_state(slots, start, asked=doctor is not None))


def _confirm_slot(start: datetime | None, act: Callable[[datetime], Appointment], message: str) -> Response | None:
    """The confirmation step's POST: book or move, commit, say so; None (with the reason flashed) if it failed."""
    if start is None:
        flash(_("Choose a time first."), "error")
        return None
    try:
        appt = act(start)
    except AppError as exc:
        _flash_error(exc)
        return None
    flash(message % {"when": i18n.format_when(appt.start_at, "weekday"), "doctor": appt.doctor.full_name}, "success")
    return redirect(url_for("consults.index"))


def _picker_state(slots: list[service.Slot], start: datetime | None, *, asked: bool = True) -> dict[str, object]:
    """What the slot picker shows: the chosen slot (then the confirmation step) or the day's free times."""
    chosen = next((s for s in slots if s.start == start), None)
    if start is not None and chosen is None and asked:
        flash(_("That time is no longer free; choose another."), "error")
    zone = ZoneInfo(str(get_timezone()))
    wanted = picker.parse_day(request.values.get("day")) or (start.astimezone(zone).date() if start else None)
    return {"choice": picker.choose_day(slots, wanted, zone), "chosen": chosen,
            "today": db.utcnow().astimezone(zone).date()}


@bp.route("/consults/<int:appointment_id>/reschedule", methods=["GET", "POST"])
@login_required
def reschedule(appointment_id: int) -> Response | str:
    """Move a booking with the same picker and confirmation as booking it, or cancel it (the reminder links here;
    a patient may do either online until the cutoff, then is told to call the clinic)."""
    appt = service.get_appointment(appointment_id, by=current_user)
    start = picker.parse_start(request.values.get("start"))
    if request.method == "POST":
        done = _confirm_slot(start, lambda when: service.reschedule(appt, start=when, by=current_user),
                             _("Moved: video consult now on %(when)s with %(doctor)s."))
        if done:
            return done
    may_change = appt.status in (AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED) and (
        current_user.role is not Role.PATIENT or service.patient_may_change(appt))
    slots = service.open_slots(appt.doctor, days=14) if may_change else []
    return render_template("consults/reschedule.html", appt=appt, may_change=may_change,
                           change_cutoff=service.change_cutoff(appt),
                           cutoff_minutes=current_app.config["CONSULT_CHANGE_CUTOFF_MINUTES"],
                           **_picker_state(slots, start, asked=may_change))


@bp.post("/consults/<int:appointment_id>/cancel")
@login_required
def cancel(appointment_id: int) -> Response:
    """Cancel an appointment and free its slot."""
    appt = service.get_appointment(appointment_id, by=current_user, audit_read=False)
    try:
        service.cancel(appt, by=current_user, reason=request.form.get("reason"))
    except AppError as exc:
        _flash_error(exc)
    else:
        flash(_("Appointment cancelled."), "success")
    return redirect(request.referrer or url_for("consults.index"))


@bp.route("/consults/availability", methods=["GET", "POST"])
@roles_required(Role.DOCTOR)
def availability() -> Response | str:
    """Publish weekly consult windows and time away."""
    if request.method == "POST":
        try:
            if request.form.get("form") == "exception":
                # The form's times are the doctor's own wall-clock times.
                zone = ZoneInfo(i18n.zone_of(current_user))
                starts = datetime.fromisoformat(request.form["starts_at"]).replace(tzinfo=zone).astimezone(UTC)
                ends = datetime.fromisoformat(request.form["ends_at"]).replace(tzinfo=zone).astimezone(UTC)
                service.add_exception(by=current_user, starts_at=starts, ends_at=ends,
                                      reason=request.form.get("reason"))
            elif request.form.get("form") == "remove":
                service.remove_availability(int(request.form["window_id"]), by=current_user)
            else:
                service.publish_availability(by=current_user, weekday=int(request.form["weekday"]),
                                             start_time=time.fromisoformat(request.form["start_time"]),
                                             end_time=time.fromisoformat(request.form["end_time"]),
                                             slot_minutes=int(request.form.get("slot_minutes") or 15))
        except (KeyError, ValueError):
            db.rollback()
            flash(_("Fill in every field with a valid value."), "error")
        except AppError as exc:
            _flash_error(exc)
        else:
            flash(_("Availability saved."), "success")
            return redirect(url_for("consults.availability"))
    windows = service.windows_for(current_user)
    exceptions = service.exceptions_for(current_user)
    return render_template("consults/availability.html", windows=windows, exceptions=exceptions, weekdays=weekdays())


@bp.get("/consults/today")
@roles_required(Role.DOCTOR)
def today() -> str:
    """The doctor's day: who is waiting, since when, with an Admit button."""
    appointments = service.day_view(current_user)
    db.session.commit()
    now = db.utcnow()
    template = "consults/_day_table.html" if request.args.get("part") == "table" else "consults/today.html"
    return render_template(template, appointments=appointments, now=now, AppointmentStatus=AppointmentStatus)


@bp.post("/consults/<int:appointment_id>/admit")
@roles_required(Role.DOCTOR)
def admit(appointment_id: int) -> Response:
    """Admit the waiting patient and open the consult room."""
    appt = service.get_appointment(appointment_id, by=current_user, audit_read=False)
    try:
        service.admit(appt, by=current_user)
    except AppError as exc:
        _flash_error(exc)
        return redirect(url_for("consults.today"))
    return redirect(url_for("consults.room", appointment_id=appointment_id))


@bp.route("/consults/<int:appointment_id>/waiting", methods=["GET", "POST"])
@login_required
def waiting(appointment_id: int) -> Response | str:
    """Virtual waiting room: check in, see where things stand, test camera and microphone."""
    appt = service.get_appointment(appointment_id, by=current_user)
    if request.method == "POST":
        try:
            service.check_in(appt, by=current_user)
        except AppError as exc:
            _flash_error(exc)
        else:
            flash(_("You are checked in."), "success")
        return redirect(url_for("consults.waiting", appointment_id=appointment_id))
    state = service.state(appt)
    participant = service.participant_of(appt, current_user)
    # The booked patient's waiting room carries the consult stage and turns into the consult when admitted.
    stage = participant is not None and participant.kind is ParticipantKind.PATIENT and not state["ended"]
    chat = service.chat_history(appt) if stage else []
    return render_template("consults/waiting.html", appt=appt, state=state, stage=stage, chat=chat,
                           in_consult=stage and state["admitted"],
                           own=appt.patient.user_id == current_user.id  # or their caregiver, in their seat
                           or patient_access.may_act_for(current_user, appt.patient, CaregiverRight.JOIN),
                           can_check_in=appt.status is AppointmentStatus.BOOKED
                           and db.utcnow() >= service.check_in_opens_at(appt),
                           ice_servers=service.ice_servers(current_user))


@bp.get("/consults/<int:appointment_id>/room")
@login_required
def room(appointment_id: int) -> Response | str:
    """The consult: video, chat, and for the doctor the chart and the consult note.

    The doctor may open it before admitting a checked-in patient (camera on, joined, offer ready), then
    Admit here starts the call at once.
    """
    appt = service.get_appointment(appointment_id, by=current_user)
    state = service.state(appt)
    participant = service.participant_of(appt, current_user)
    if state["ended"]:
        flash(_("This consult has ended."), "info")
        return redirect(url_for("consults.today" if current_user.role is Role.DOCTOR else "consults.index"))
    if participant is None or (participant.kind is not ParticipantKind.DOCTOR and not state["admitted"]):
        return redirect(url_for("consults.waiting", appointment_id=appointment_id))
    is_doctor = participant.kind is ParticipantKind.DOCTOR
    patient = patients.get_patient(appt.patient_id, by=current_user, action="patient.read") if is_doctor else None
    chat = service.chat_history(appt)
    return render_template("consults/room.html", appt=appt, patient=patient, is_doctor=is_doctor,
                           role=participant.kind.value, chat=chat, encounter=appt.encounter,
                           can_admit=is_doctor and not state["admitted"],
                           visit_summary=summaries.of(appt) if is_doctor else None)


@bp.post("/consults/<int:appointment_id>/end")
@roles_required(Role.DOCTOR)
def end(appointment_id: int) -> Response:
    """End the consult: the appointment is fulfilled and the encounter finished."""
    appt = service.get_appointment(appointment_id, by=current_user, audit_read=False)
    try:
        service.end_consult(appt, by=current_user, notes=request.form.get("notes"),
                            diagnosis=request.form.get("diagnosis"))
    except AppError as exc:
        _flash_error(exc)
        return redirect(url_for("consults.room", appointment_id=appointment_id))
    flash(_("Consult ended; the note is saved with the encounter."), "success")
    return redirect(url_for("consults.today"))


@bp.app_context_processor
def _summary_helpers() -> dict[str, object]:
    def my_visit_summaries() -> list[object]:
        if not current_user.is_authenticated or current_user.role is not Role.PATIENT:
            return []
        return list(summaries.mine(by=current_user))

    return {"my_visit_summaries": my_visit_summaries, "visit_prescriptions": summaries.prescriptions_made,
            "visit_follow_up_booked": summaries.follow_up_booked}


@bp.route("/consults/<int:appointment_id>/summary", methods=["GET", "POST"])
@login_required
def visit_summary(appointment_id: int) -> Response | str:
    """The visit summary: the doctor writes it (in the room or after); everyone involved reads and prints it."""
    appt = service.get_appointment(appointment_id, by=current_user, action="visit_summary.read", audit_read=False)
    if request.method == "POST":
        try:
            summaries.save(appt, by=current_user, **{k: request.form.get(k) for k in summaries.LIMITS})
        except AppError as exc:
            _flash_error(exc)
        else:
            flash(_("Visit summary saved. The patient sees it once the consult has ended."), "success")
        back = request.form.get("back")
        if back == "room" and appt.status is AppointmentStatus.ARRIVED:
            return redirect(url_for("consults.room", appointment_id=appointment_id))
        return redirect(url_for("consults.visit_summary", appointment_id=appointment_id))
    summary = summaries.read(appt, by=current_user)
    can_write = current_user.role is Role.DOCTOR and appt.doctor_id == current_user.id and appt.status in (
        AppointmentStatus.ARRIVED, AppointmentStatus.FULFILLED)
    return render_template("consults/visit_summary.html", appt=appt, summary=summary, can_write=can_write)


