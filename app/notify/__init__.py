"""Notifications: an outbox table that in-app pages read and a real SMS/email sender can consume."""
