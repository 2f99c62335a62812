"""API shapes for patient records (marshmallow; also feed the OpenAPI description)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.patients.models import AllergySeverity, ClinicalStatus, Sex


class AllergySchema(Schema):
    id = fields.Int(dump_only=True)
    substance = fields.Str(required=True, validate=validate.Length(min=1, max=120))
    severity = fields.Enum(AllergySeverity, by_value=True, required=True)
    reaction = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=300))
    status = fields.Enum(ClinicalStatus, by_value=True, dump_only=True)
    recorded_at = fields.DateTime(dump_only=True)


class ConditionSchema(Schema):
    id = fields.Int(dump_only=True)
    description = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    code = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=32))
    onset_date = fields.Date(allow_none=True, load_default=None)
    status = fields.Enum(ClinicalStatus, by_value=True, dump_only=True)
    recorded_at = fields.DateTime(dump_only=True)


class MedicationSchema(Schema):
    id = fields.Int(dump_only=True)
    name = fields.Str(required=True, validate=validate.Length(min=1, max=120))
    dosage = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=200))
    status = fields.Enum(ClinicalStatus, by_value=True, dump_only=True)
    recorded_at = fields.DateTime(dump_only=True)


class StatusSchema(Schema):
    status = fields.Enum(ClinicalStatus, by_value=True, required=True)


class PatientSchema(Schema):
    id = fields.Int(dump_only=True)
    mrn = fields.Str(validate=validate.Length(equal=8), load_default=None,
                     metadata={"description": "Generated when omitted; 8 digits with a Luhn check digit."})
    given_name = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    family_name = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    birth_date = fields.Date(required=True)
    sex = fields.Enum(Sex, by_value=True, required=True)
    phone = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=32))
    email = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=254))
    address = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=300))
    facility_id = fields.Int(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class PatientSummarySchema(Schema):
    id = fields.Int()
    mrn = fields.Str()
    given_name = fields.Str()
    family_name = fields.Str()
    birth_date = fields.Date()
    sex = fields.Enum(Sex, by_value=True)


class NewPatientSchema(PatientSchema):
    allergies = fields.List(fields.Nested(AllergySchema), load_default=list, validate=validate.Length(max=50))
    conditions = fields.List(fields.Nested(ConditionSchema), load_default=list, validate=validate.Length(max=50))
    medications = fields.List(fields.Nested(MedicationSchema), load_default=list, validate=validate.Length(max=50))
    allow_possible_duplicate = fields.Bool(load_default=False, load_only=True)


class PatientUpdateSchema(PatientSchema):
    mrn = fields.Str(dump_only=True)


class CareAssignmentSchema(Schema):
    id = fields.Int(dump_only=True)
    practitioner_id = fields.Int(required=True, data_key="doctor_id")
    practitioner_name = fields.Function(lambda a: a.practitioner.full_name, dump_only=True)
    reason = fields.Str(allow_none=True, load_default=None, validate=validate.Length(max=200))
    assigned_at = fields.DateTime(dump_only=True)


class ChartSchema(PatientSchema):
    allergies = fields.List(fields.Nested(AllergySchema))
    conditions = fields.List(fields.Nested(ConditionSchema))
    medications = fields.List(fields.Nested(MedicationSchema))


class SearchArgsSchema(Schema):
    q = fields.Str(load_default=None, validate=validate.Length(max=100),
                   metadata={"description": "Name prefix(es) or MRN"})
    mrn = fields.Str(load_default=None, validate=validate.Length(max=16))
    birth_date = fields.Date(load_default=None)
    page = fields.Int(load_default=1, validate=validate.Range(min=1, max=10_000))
    per_page = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


class PatientPageSchema(Schema):
    items = fields.List(fields.Nested(PatientSummarySchema))
    total = fields.Int()
    page = fields.Int()
    per_page = fields.Int()
    pages = fields.Int()


class AccessEventSchema(Schema):
    occurred_at = fields.DateTime()
    actor_name = fields.Str()
    actor_role = fields.Str()
    action = fields.Str()
