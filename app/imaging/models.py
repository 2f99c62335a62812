"""Studies, series and instances indexed by DICOM UIDs; the bytes live in object storage under ``object_key``.

Column names are snake_case forms of the DICOM keywords.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.db import Base, IntPk, UtcTimestamp
from app.facilities.models import Facility
from app.imaging.documents import kind_of
from app.patients.models import Patient


class Study(Base):
    """One imaging study. ``patient_id`` is None while unmatched (PatientID is no known MRN)."""

    __tablename__ = "imaging_study"

    id: so.Mapped[IntPk]
    study_instance_uid: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    patient_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    # The clinic that sent it: its staff see and reconcile it even before it is matched.
    facility_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    dicom_patient_id: so.Mapped[str | None] = so.mapped_column(sa.String(64), index=True)
    patient_name: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    patient_name_search: so.Mapped[str | None] = so.mapped_column(sa.String(200), index=True)
    patient_birth_date: so.Mapped[str | None] = so.mapped_column(sa.String(8))
    patient_sex: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    study_date: so.Mapped[date | None] = so.mapped_column(index=True)
    study_time: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    accession_number: so.Mapped[str | None] = so.mapped_column(sa.String(16), index=True)
    study_id: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    study_description: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    referring_physician_name: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    modalities: so.Mapped[str] = so.mapped_column(sa.String(64), default="")
    created_at: so.Mapped[UtcTimestamp]

    series: so.Mapped[list[Series]] = so.relationship(back_populates="study", order_by="Series.series_number")

    @property
    def modality_list(self) -> list[str]:
        return [m for m in self.modalities.split("\\") if m]

    @property
    def patient_name_display(self) -> str | None:
        """DICOM's ``Family^Given^Middle`` shown the way the chart shows names: ``FAMILY, Given Middle``."""
        if not self.patient_name:
            return None
        alphabetic = self.patient_name.split("=")[0]  # the Ideographic and Phonetic groups follow after "="
        family, _, rest = alphabetic.partition("^")
        given = " ".join(part for part in rest.split("^")[:2] if part)
        return f"{family.upper()}, {given}" if given else family.upper()


class Series(Base):
    __tablename__ = "imaging_series"

    id: so.Mapped[IntPk]
    series_instance_uid: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    study_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("imaging_study.id", ondelete="CASCADE"), index=True)
    modality: so.Mapped[str | None] = so.mapped_column(sa.String(16), index=True)
    series_number: so.Mapped[int | None]
    series_description: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    body_part_examined: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    created_at: so.Mapped[UtcTimestamp]

    study: so.Mapped[Study] = so.relationship(back_populates="series")
    instances: so.Mapped[list[Instance]] = so.relationship(back_populates="series",
                                                           order_by="Instance.instance_number")


class Instance(Base):
    __tablename__ = "imaging_instance"

    id: so.Mapped[IntPk]
    sop_instance_uid: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    sop_class_uid: so.Mapped[str] = so.mapped_column(sa.String(64))
    series_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("imaging_series.id", ondelete="CASCADE"),
                                                 index=True)
    instance_number: so.Mapped[int | None]
    transfer_syntax_uid: so.Mapped[str] = so.mapped_column(sa.String(64))
    rows: so.Mapped[int | None]
    columns: so.Mapped[int | None]
    number_of_frames: so.Mapped[int] = so.mapped_column(default=1)
    bits_allocated: so.Mapped[int | None]  # a QIDO-RS return key (PS3.18 table 10.6.3-5)
    object_key: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    size: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    sha256: so.Mapped[str] = so.mapped_column(sa.String(64))
    # Byte offset of the Pixel Data value, so single frames of uncompressed files are range-read.
    pixel_data_offset: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    received_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    source: so.Mapped[str] = so.mapped_column(sa.String(32), default="upload")
    created_at: so.Mapped[UtcTimestamp]

    series: so.Mapped[Series] = so.relationship(back_populates="instances")

    @property
    def kind(self) -> str:
        """``image``, ``pdf``, ``sr`` or ``other`` (objects without pixels have no Rows)."""
        return kind_of(self.sop_class_uid, has_pixels=self.rows is not None)


class DicomPeer(Base):
    """A DICOM application entity the platform knows: a clinic's scanner, workstation or PACS.

    The listener looks peers up per association (see :mod:`app.imaging.dimse.peers`): an unknown calling AE
    title is refused, and each service needs its permission. Scans stored by a peer belong to its facility,
    and its queries and retrievals see that facility's studies. ``host``/``port`` are where C-MOVE sends to.
    """

    __tablename__ = "dicom_peer"

    id: so.Mapped[IntPk]
    ae_title: so.Mapped[str] = so.mapped_column(sa.String(16), unique=True)
    host: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    port: so.Mapped[int | None]
    facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    description: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    can_store: so.Mapped[bool] = so.mapped_column(default=True)
    can_query: so.Mapped[bool] = so.mapped_column(default=False)
    can_retrieve: so.Mapped[bool] = so.mapped_column(default=False)
    can_worklist: so.Mapped[bool] = so.mapped_column(default=False)
    active: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[UtcTimestamp]

    facility: so.Mapped[Facility] = so.relationship()

    @property
    def permission_labels(self) -> list[str]:
        return [label for allowed, label in ((self.can_store, "store"), (self.can_query, "query"),
                                             (self.can_retrieve, "retrieve"), (self.can_worklist, "worklist"))
                if allowed]


class ImagingOrder(Base):
    """A requested imaging procedure for a patient at a clinic: what the scanner's modality worklist shows.

    Created by clinic staff from the chart; the scanner copies the Accession Number into the images it sends,
    so they land on the right chart. An order may also ask for its scan to be read (``read_priority`` set): the
    reading request is then made when the scan arrives (see :func:`app.imaging.service.on_studies_arrived`).
    """

    __tablename__ = "imaging_order"

    id: so.Mapped[IntPk]
    accession_number: so.Mapped[str] = so.mapped_column(sa.String(16), unique=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    modality: so.Mapped[str] = so.mapped_column(sa.String(16))
    description: so.Mapped[str] = so.mapped_column(sa.String(64))
    scheduled_at: so.Mapped[datetime] = so.mapped_column(index=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default="scheduled")  # scheduled | cancelled
    created_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    created_at: so.Mapped[UtcTimestamp]
    read_priority: so.Mapped[str | None] = so.mapped_column(sa.String(8))  # routine | urgent | stat; None: no read
    read_question: so.Mapped[str | None] = so.mapped_column(sa.String(1000))
    read_assigned_to_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))  # None: pool

    patient: so.Mapped[Patient] = so.relationship()

    @property
    def asks_to_be_read(self) -> bool:
        return self.read_priority is not None


class ObjectToDelete(Base):
    """An object that may have reached the store without a committed row (its upload or its deletion failed
    while the store was unreachable), to delete once the store answers again (see ``app.imaging.orphans``)."""

    __tablename__ = "object_to_delete"

    object_key: so.Mapped[str] = so.mapped_column(sa.String(128), primary_key=True)
    noted_at: so.Mapped[UtcTimestamp]
