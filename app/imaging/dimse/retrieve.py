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

from app.imaging.dicomfile import UNCOMPRESSED
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


def _decompressed_if_needed(event: Any, inst: Instance, ds: Dataset) -> Dataset:
    """A compressed instance the receiving peer does not accept as stored, decoded to explicit VR little endian
    when the peer accepts that (C-GET peers often propose uncompressed syntaxes only); otherwise as stored."""
    if inst.transfer_syntax_uid in UNCOMPRESSED:
        return ds
    accepted = {str(cx.transfer_syntax[0]) for cx in event.assoc.accepted_contexts
                if cx.abstract_syntax == inst.sop_class_uid}
    if not accepted or inst.transfer_syntax_uid in accepted or not accepted & UNCOMPRESSED:
        return ds
    try:
        ds.decompress()
    except Exception:  # noqa: BLE001 - no decoder: the sub-operation fails as it would have
        logger.warning("instance %s could not be decompressed for a retrieval", inst.id, exc_info=True)
    return ds


def send(event: Any, found: list[Instance]) -> Iterator[Response]:
    """The (status, dataset) pairs pynetdicom sends as C-STORE sub-operations, one per instance."""
    for inst in found:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            ds = _decompressed_if_needed(event, inst, load(inst))
        except Exception:
            logger.exception("instance %s could not be read for a retrieval", inst.id)
            yield failure(SUBOPERATIONS_FAILED, "a stored instance could not be read"), None
            return
        yield PENDING, ds
