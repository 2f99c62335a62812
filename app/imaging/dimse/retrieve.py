"""What C-MOVE and C-GET share: the instances a retrieval asks for, read back from the object store."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from app.imaging.dimse import query
from app.imaging.dimse.status import CANCELLED, CANNOT_UNDERSTAND, PENDING, SUBOPERATIONS_FAILED, failure
from app.imaging.models import Instance
from app.imaging.service import object_store

logger = logging.getLogger(__name__)
PATIENT_ROOT = {PatientRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelGet}
Response = tuple[int | Dataset, Dataset | None]


class RetrieveError(Exception):
    def __init__(self, answer: Dataset) -> None:
        super().__init__(str(answer.ErrorComment))
        self.answer = answer


def requested(event: Any, *, facility_id: int, calling: str, action: str) -> list[Instance]:
    """The instances under the identifier of a C-MOVE or C-GET, visible to the peer's clinic (audited).

    :raises RetrieveError: with the failure to answer.
    """
    model = "patient" if event.request.AffectedSOPClassUID in PATIENT_ROOT else "study"
    try:
        found = query.instances(query.parse(event.identifier, model=model), facility_id=facility_id)
        query.audit_read(action, calling=calling, studies=list({i.series.study.id: i.series.study
                                                               for i in found}.values()))
        return found
    except query.QueryError as exc:
        raise RetrieveError(failure(exc.status, exc.comment)) from None
    except Exception:
        logger.exception("%s from %s failed", action, calling)
        raise RetrieveError(failure(CANNOT_UNDERSTAND, "the retrieval could not be run")) from None


def load(inst: Instance) -> Dataset:
    """The stored object as a dataset, in the transfer syntax it was received in."""
    return pydicom.dcmread(io.BytesIO(object_store().read(inst.object_key)))


def send(event: Any, found: list[Instance]) -> Iterator[Response]:
    """The (status, dataset) pairs pynetdicom sends as C-STORE sub-operations, one per instance."""
    for inst in found:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            ds = load(inst)
        except Exception:
            logger.exception("instance %s could not be read for a retrieval", inst.id)
            yield failure(SUBOPERATIONS_FAILED, "a stored instance could not be read"), None
            return
        yield PENDING, ds
