"""Consult pages: availability, booking, appointments, the waiting room and device test, the consult room."""

from __future__ import annotations

from flask import Blueprint

from app.auth.models import Role
from app.web import add_nav

bp = Blueprint("consults", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/consults")
