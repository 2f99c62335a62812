"""Accounts and sign-in: passwords, lockout, sessions, roles, admin user management."""
