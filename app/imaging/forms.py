from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, DateTimeLocalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from app.forms import AppForm
from app.imaging.orders import MODALITIES


class PeerForm(AppForm):
    ae_title = StringField(_l("AE title"), validators=[DataRequired(), Length(max=16)])
    facility_id = SelectField(_l("Clinic"), coerce=int, validators=[DataRequired()])
    host = StringField(_l("Host"), validators=[Optional(), Length(max=255)])
    port = IntegerField(_l("Port"), validators=[Optional()])
    description = StringField(_l("Description"), validators=[Optional(), Length(max=200)])
    can_store = BooleanField(_l("May send scans (C-STORE)"), default=True)
    can_query = BooleanField(_l("May search (C-FIND)"))
    can_retrieve = BooleanField(_l("May retrieve (C-MOVE, C-GET)"))
    can_worklist = BooleanField(_l("May read the modality worklist"))
    active = BooleanField(_l("Active"), default=True)


class ImagingOrderForm(AppForm):
    modality = SelectField(_l("Modality"), choices=[(m, m) for m in MODALITIES])
    description = StringField(_l("Procedure"), validators=[DataRequired(), Length(max=64)])
    scheduled_at = DateTimeLocalField(_l("Scheduled for"), format="%Y-%m-%dT%H:%M", validators=[DataRequired()])
    read = BooleanField(_l("Also send it to be read when the scan arrives"))
    read_priority = SelectField(_l("Priority"), choices=[("routine", _l("Routine")), ("urgent", _l("Urgent")),
                                                              ("stat", "STAT")],
                                default="routine")
    read_question = TextAreaField(_l("Clinical question"), validators=[Optional(), Length(max=1000)])
    read_assigned_to_id = SelectField(_l("Send to"), choices=[("", "The hospital's reading pool (first doctor free)")],
                                      validate_choice=False)
