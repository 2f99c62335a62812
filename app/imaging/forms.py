from __future__ import annotations

from wtforms import BooleanField, DateTimeLocalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from app.forms import AppForm
from app.imaging.orders import MODALITIES


class PeerForm(AppForm):
    ae_title = StringField("AE title", validators=[DataRequired(), Length(max=16)])
    facility_id = SelectField("Clinic", coerce=int, validators=[DataRequired()])
    host = StringField("Host", validators=[Optional(), Length(max=255)])
    port = IntegerField("Port", validators=[Optional()])
    description = StringField("Description", validators=[Optional(), Length(max=200)])
    can_store = BooleanField("May send scans (C-STORE)", default=True)
    can_query = BooleanField("May search (C-FIND)")
    can_retrieve = BooleanField("May retrieve (C-MOVE, C-GET)")
    can_worklist = BooleanField("May read the modality worklist")
    active = BooleanField("Active", default=True)


class ImagingOrderForm(AppForm):
    modality = SelectField("Modality", choices=[(m, m) for m in MODALITIES])
    description = StringField("Procedure", validators=[DataRequired(), Length(max=64)])
    scheduled_at = DateTimeLocalField("Scheduled for", format="%Y-%m-%dT%H:%M", validators=[DataRequired()])
    read = BooleanField("Also send it to be read when the scan arrives")
    read_priority = SelectField("Priority", choices=[("routine", "Routine"), ("urgent", "Urgent"), ("stat", "STAT")],
                                default="routine")
    read_question = TextAreaField("Clinical question", validators=[Optional(), Length(max=1000)])
    read_assigned_to_id = SelectField("Send to", choices=[("", "The hospital's reading pool (first doctor free)")],
                                      validate_choice=False)
