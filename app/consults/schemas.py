from __future__ import annotations

from marshmallow import Schema, fields, validate


class SlotSchema(Schema):
    doctor_id = fields.Int()
    start = fields.AwareDateTime()
    end = fields.AwareDateTime()


class SlotArgsSchema(Schema):
    days = fields.Int(load_default=7, validate=validate.Range(1, 60))


class AvailabilitySchema(Schema):
    id = fields.Int(dump_only=True)
    weekday = fields.Int(required=True, validate=validate.Range(0, 6))
    start_time = fields.Time(required=True)
    end_time = fields.Time(required=True)
    slot_minutes = fields.Int(load_default=15, validate=validate.Range(5, 240))
    timezone = fields.Str(load_default=None, validate=validate.Length(max=64),
                          metadata={"description": "IANA zone of the times (default: the doctor's own zone)"})


class ExceptionSchema(Schema):
    id = fields.Int(dump_only=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    reason = fields.Str(load_default=None, validate=validate.Length(max=200))


class AppointmentSchema(Schema):
    id = fields.Int(dump_only=True)
    patient_id = fields.Int(required=True)
    doctor_id = fields.Int(required=True)
    start = fields.AwareDateTime(required=True, attribute="start_at")
    end = fields.AwareDateTime(dump_only=True, attribute="end_at")
    status = fields.Function(lambda a: a.status.value, dump_only=True)
    reason = fields.Str(load_default=None, validate=validate.Length(max=300))
    checked_in_at = fields.AwareDateTime(dump_only=True)
    admitted_at = fields.AwareDateTime(dump_only=True)


class RescheduleSchema(Schema):
    start = fields.AwareDateTime(required=True)


class CancelSchema(Schema):
    reason = fields.Str(load_default=None, validate=validate.Length(max=300))


class NoteSchema(Schema):
    notes = fields.Str(load_default=None)
    diagnosis = fields.Str(load_default=None)


class EncounterSchema(Schema):
    id = fields.Int()
    appointment_id = fields.Int()
    status = fields.Function(lambda e: e.status.value)
    started_at = fields.AwareDateTime()
    ended_at = fields.AwareDateTime()
    notes = fields.Str()
    diagnosis = fields.Str()


class TokenSchema(Schema):
    token = fields.Str(required=True, validate=validate.Length(max=1000))
    # The page has been reading this consult's signals since this id (a waiting room turning into the consult).
    since = fields.Int(load_default=None, validate=validate.Range(min=0))


class SignalSchema(Schema):
    kind = fields.Str(required=True, validate=validate.Length(max=16))
    sdp = fields.Str(load_default=None)
    candidate = fields.Dict(load_default=None, allow_none=True)
    gen = fields.Str(load_default=None, allow_none=True)
    to = fields.Int(load_default=None, allow_none=True)
    since = fields.Int(load_default=None, allow_none=True, validate=validate.Range(min=0))  # hello only
    # media only, checked as true/false by the service (no "off" or 0 taken for false):
    camera = fields.Raw(load_default=None, allow_none=True, metadata={"type": "boolean",
                        "description": "media: the sender's camera is on"})
    audio_only = fields.Raw(load_default=None, allow_none=True, metadata={"type": "boolean",
                            "description": "media: the cameras are off for the whole call"})


class SignalArgsSchema(Schema):
    after = fields.Int(load_default=0, validate=validate.Range(min=0))


class ChatSchema(Schema):
    id = fields.Int(dump_only=True)
    body = fields.Str(required=True)
    sender_id = fields.Int(dump_only=True)
    sender_name = fields.Function(lambda m: m.sender.full_name, dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class InviteSchema(Schema):
    user_id = fields.Int(required=True)


class OfferSchema(Schema):
    sdp = fields.Str(required=True)
    type = fields.Str(required=True, validate=validate.OneOf(["offer"]))


class RelayOfferSchema(OfferSchema):
    #: A new peer connection of a participant the relay already knows (a reload, a failed connection).
    restart = fields.Bool(load_default=False)


class RelaySwitchSchema(Schema):
    reason = fields.Str(required=True, validate=validate.OneOf(["p2p-failed"]))
