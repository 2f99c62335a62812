"""Scans: DICOM ingest into object storage, DICOMweb (STOW/QIDO/WADO), the viewer and de-identified export."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the imaging pages and DICOMweb, their navigation and the chart panel."""
    from app import web
    from app.auth.models import Role
    from app.imaging import dicomweb, views

    app.register_blueprint(views.bp)
    app.register_blueprint(dicomweb.bp)
    web.add_nav(app, "Upload scans", "imaging.upload", Role.CLINIC_STAFF)
    web.add_nav(app, "Unmatched scans", "imaging.unmatched", Role.CLINIC_STAFF)
    web.add_nav(app, "DICOM peers", "imaging.dicom_peers", Role.ADMIN)
    web.add_chart_panel(app, "imaging/_chart_panel.html")
