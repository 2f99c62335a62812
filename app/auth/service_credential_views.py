"""Admin pages: issue and revoke the service credentials of DICOMweb peers (see :mod:`service_credentials`)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from app.auth import service_credentials as service
from app.auth.decorators import roles_required
from app.auth.forms import ConfirmForm
from app.auth.models import Role
from app.errors import AppError
from app.facilities import service as facilities
from app.facilities.models import FacilityKind
from app.forms import AppForm
from app.transactions import commit_at_request_end, submit

bp = commit_at_request_end(Blueprint("service_credentials", __name__, url_prefix="/admin/dicomweb-peers",
                                     template_folder="templates"))


class PeerForm(AppForm):
    name = StringField("Peer name", validators=[DataRequired(), Length(max=120)])
    facility_id = SelectField("Clinic", coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    may_read = BooleanField(service.ACCESS_LABELS["read"], default=True)
    may_store = BooleanField(service.ACCESS_LABELS["store"])

    def apply_error(self, exc: AppError) -> None:
        super().apply_error(exc)
        self.form_errors.extend((exc.errors or {}).get("access", []))  # the access boxes share one message


@bp.route("", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def peers() -> Response | tuple[str, int]:
    """List peer credentials and issue a new one (its secret is shown once)."""
    form = PeerForm()
    form.facility_id.choices = [("", "— choose a clinic —")] + [
        (str(f.id), f.name) for f in facilities.list_facilities() if f.kind is FacilityKind.CLINIC]
    status, issued = 200, None
    if form.validate_on_submit():
        access = [a for a, wanted in (("read", form.may_read.data), ("store", form.may_store.data)) if wanted]

        def issue() -> None:
            nonlocal issued
            issued = service.issue(name=form.name.data or "", facility_id=form.facility_id.data, access=access,
                                   by=current_user)

        status = submit(form, issue) or 200
    elif request.method == "POST":
        status = 422
    items = service.list_credentials(by=current_user)
    return render_template("auth/service_credentials.html", credentials=items, form=form, issued=issued,
                           confirm=ConfirmForm(), dicomweb_url=url_for("dicomweb.search_studies", _external=True)
                           .removesuffix("/studies")), status


@bp.post("/<int:credential_id>/revoke")
@roles_required(Role.ADMIN)
def revoke(credential_id: int) -> Response:
    """Revoke a peer's credential; its next request is refused."""
    if ConfirmForm().validate_on_submit():
        credential = service.revoke(credential_id, by=current_user)
        flash(_("%(name)s can no longer connect.", name=credential.name), "success")
    return redirect(url_for("service_credentials.peers"))


