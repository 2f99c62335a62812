"""C-FIND SCP for Patient Root and Study Root Query/Retrieve: a peer searches its clinic's studies."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from app import db
from app.imaging.dimse import query
from app.imaging.dimse.status import CANCELLED, CANNOT_UNDERSTAND, PENDING, failure
from app.imaging.models import Instance, Series, Study

logger = logging.getLogger(__name__)
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
              "IMAGE": "SOPInstanceUID"}
Response = tuple[int | Dataset, Dataset | None]


def _date(value: Any) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _study_values(study: Study) -> dict[str, Any]:
    return {"PatientID": study.dicom_patient_id or "", "PatientName": study.patient_name or "",
            "PatientBirthDate": study.patient_birth_date or "", "PatientSex": study.patient_sex or "",
            "StudyInstanceUID": study.study_instance_uid, "StudyDate": _date(study.study_date),
            "StudyTime": study.study_time or "", "AccessionNumber": study.accession_number or "",
            "StudyID": study.study_id or "", "StudyDescription": study.study_description or "",
            "ReferringPhysicianName": study.referring_physician_name or "",
            "ModalitiesInStudy": study.modality_list}


def _series_values(series: Series) -> dict[str, Any]:
    return {"SeriesInstanceUID": series.series_instance_uid, "Modality": series.modality or "",
            "SeriesNumber": "" if series.series_number is None else series.series_number,
            "SeriesDescription": series.series_description or "", "BodyPartExamined": series.body_part_examined or ""}


def _instance_values(inst: Instance) -> dict[str, Any]:
    def number(value: int | None) -> int | str:
        return value if value is not None else ""

    return {"SOPInstanceUID": inst.sop_instance_uid, "SOPClassUID": inst.sop_class_uid,
            "InstanceNumber": number(inst.instance_number), "Rows": number(inst.rows),
            "Columns": number(inst.columns), "NumberOfFrames": inst.number_of_frames or ""}


def _counts(column: Any, group: Any, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    return dict(db.session.execute(sa.select(group, sa.func.count(column)).where(group.in_(ids)).group_by(group)).all())


def answers(q: query.Query, rows: list[Any]) -> tuple[list[dict[str, Any]], list[Study]]:
    """The attribute values of each match, and the studies they show (for the audit)."""
    if q.level in ("PATIENT", "STUDY"):
        studies = [row[0] for row in rows]
        ids = [s.id for s in studies]
        n_series = _counts(Series.id, Series.study_id, ids)
        n_instances = dict(db.session.execute(sa.select(Series.study_id, sa.func.count(Instance.id)).join(
            Instance.series).where(Series.study_id.in_(ids)).group_by(Series.study_id)).all()) if ids else {}
        values = [_study_values(s) | {"NumberOfStudyRelatedSeries": n_series.get(s.id, 0),
                                      "NumberOfStudyRelatedInstances": n_instances.get(s.id, 0)} for s in studies]
        if q.level == "PATIENT":
            patients: dict[str, dict[str, Any]] = {}
            for v in values:
                p = patients.setdefault(v["PatientID"], {k: v[k] for k in ("PatientID", "PatientName",
                                                                            "PatientBirthDate", "PatientSex")})
                p["NumberOfPatientRelatedStudies"] = p.get("NumberOfPatientRelatedStudies", 0) + 1
            values = list(patients.values())
        return values, studies
    if q.level == "SERIES":
        n = _counts(Instance.id, Instance.series_id, [row[0].id for row in rows])
        return ([_study_values(st) | _series_values(se) | {"NumberOfSeriesRelatedInstances": n.get(se.id, 0)}
                 for se, st in rows], [st for _se, st in rows])
    return ([_study_values(st) | _series_values(se) | _instance_values(inst) for inst, se, st in rows],
            [st for _i, _se, st in rows])


def identifier(request: Dataset, level: str, values: dict[str, Any], *, retrieve_ae: str) -> Dataset:
    """The response identifier: every key the peer asked for (empty when unknown here), filled in."""
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    for elem in request:
        keyword = elem.keyword
        if not keyword or elem.tag.group in (0x0000, 0x0002) or keyword in ("SpecificCharacterSet",
                                                                            "QueryRetrieveLevel"):
            continue
        if elem.VR == "SQ":
            setattr(out, keyword, [])
            continue
        value = values.get(keyword, "")
        try:
            setattr(out, keyword, value)
        except Exception:  # noqa: BLE001 - a value that does not fit the key's VR is sent empty
            setattr(out, keyword, "")
    out.QueryRetrieveLevel = level
    setattr(out, UNIQUE_KEY[level], values.get(UNIQUE_KEY[level], ""))
    out.RetrieveAETitle = retrieve_ae
    return out


def respond(event: Any, *, facility_id: int, calling: str, retrieve_ae: str) -> Iterator[Response]:
    """The C-FIND responses: pending ones with the matches, or one failure that says why."""
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
    try:
        request = event.identifier
        q = query.parse(request, model="patient" if patient_root else "study")
        rows = query.matches(q, facility_id=facility_id)
        values, studies = answers(q, rows)
        query.audit_read("imaging.dicom.find", calling=calling, studies=studies)
    except query.QueryError as exc:
        yield failure(exc.status, exc.comment), None
        return
    except Exception:
        logger.exception("C-FIND from %s failed", calling)
        yield failure(CANNOT_UNDERSTAND, "the query could not be run"), None
        return
    for v in values:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, identifier(request, q.level, v, retrieve_ae=retrieve_ae)
