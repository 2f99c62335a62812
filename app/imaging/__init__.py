"""Scans: DICOM ingest into object storage, DICOMweb (STOW/QIDO/WADO), the viewer and de-identified export."""
