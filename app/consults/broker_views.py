"""Media broker pages: redeeming a guest invite link, a consult's recordings, and the guest fence.

Routes hang on the consult pages blueprint (imported at the end of :mod:`app.consults.views`), which commits at the
request boundary.
"""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.consults import invites, recordings
from app.consults import service as consults
from app.consults.views import bp
from app.errors import problem_response, wants_problem_json


@bp.app_template_global()
def consult_recordings(patient: object | None = None) -> list[object]:
    """Recordings the viewer may play (on a chart they already opened, or their own consult list)."""
    if not current_user.is_authenticated:
        return []
    return list(recordings.playable_for(current_user, patient_id=getattr(patient, "id", None)))


@bp.before_app_request
def _guest_fence() -> Response | str | None:
    """A guest account reaches its own consult's room and media/chat API only; it ends with the consult."""
    if not current_user.is_authenticated or current_user.role is not Role.GUEST:
        return None
    user: User = current_user._get_current_object()  # type: ignore[attr-defined]
    verdict = invites.guard(user, request.endpoint, request.view_args or {})
    if verdict is None:
        return None
    if verdict == "ended":
        invites.end_guest(user, reason="consult over")
        db.session.commit()  # the fence answers for any blueprint's page: the ended guest is saved here
        logout_user()
        session.clear()
        if wants_problem_json():
            return problem_response(401, "guest-ended", "Guest access ended",
                                    "This consult has ended; guest access is over.")
        return render_template("consults/invite.html", problem="The consult has ended. Thank you for joining.",
                               token=None, invite=None), 410
    if verdict == "left":
        appointment = invites.guest_appointment(user)
        assert appointment is not None
        return render_template("consults/invite.html", problem="You left the consult.", invite=None, token=None,
                               rejoin_url=url_for("consults.room", appointment_id=appointment.id))
    audit.record("guest.outside", by=user, outcome=Outcome.DENIED, resource_type="Endpoint",
                 resource_id=request.endpoint)
    db.session.commit()  # the fence answers for any blueprint's page: the denial is saved here
    return problem_response(404, "not-found", "Not found", "No such page, or you do not have access to it.")


@bp.route("/consults/invite/<token>", methods=["GET", "POST"])
def invite_redeem(token: str) -> Response | tuple[str, int] | str:
    """A guest's single-use link: GET shows who is invited (link previews do not use it up), POST enters."""
    invite = invites.find_invite(token)
    problem = invites.invite_problem(invite)
    if request.method == "GET" or problem is not None:
        if problem is not None and request.method == "POST":
            invites.redeem(token)  # audits the refusal
        return render_template("consults/invite.html", problem=problem, invite=invite, token=token), \
            (200 if problem is None else 410)
    result = invites.redeem(token)
    if isinstance(result, str):
        return render_template("consults/invite.html", problem=result, invite=invite, token=token), 410
    assert invite is not None
    db.session.commit()  # the guest account is saved before the session is signed in
    if current_user.is_authenticated:
        logout_user()
    session.clear()
    login_user(result)
    session["last_seen"] = db.utcnow().isoformat()
    return redirect(url_for("consults.room", appointment_id=invite.appointment_id))


@bp.get("/consults/<int:appointment_id>/recordings")
@login_required
def recordings_page(appointment_id: int) -> str:
    """A consult's recordings, playable in the page (the treating doctor and the patient)."""
    appt = consults.get_appointment(appointment_id, by=current_user, audit_read=False)
    rows = recordings.list_recordings(appt, by=current_user)
    return render_template("consults/recordings.html", appt=appt, recordings=rows)
