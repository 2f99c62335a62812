"""Findings back to the patient: reading requests, the doctor's worklist, signed reports, critical results,
release to the patient (FHIR ServiceRequest / DiagnosticReport shapes)."""
