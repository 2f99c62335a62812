"""The DICOM network side (DIMSE): the listener and one module per service class it answers."""
