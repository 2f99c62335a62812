"""Studies, series and instances indexed by DICOM UIDs; the bytes live in object storage under ``object_key``.

Column names are snake_case forms of the DICOM keywords.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.db import Base, IntPk, UtcTimestamp
from app.imaging.documents import kind_of


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
        family, _, rest = self.patient_name.partition("^")
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
