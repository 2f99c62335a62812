"""Append-only audit trail of every touch of patient data, every sign-in and every denial."""
