"""Facilities: the remote hospital and the town clinics (each clinic with its pharmacy)."""
