"""A small SMART on FHIR app served beside the platform, so a new user can watch a standalone launch.

It stands in for a third-party app: it gets a token through the authorization server (code + PKCE, as a public
client) and reads the patient's record through ``/fhir`` with that token only. The demo seed registers it.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, url_for

from app import db
from app.auth.oauth_models import OAuthClient
from app.web import render

bp = Blueprint("smart_demo", __name__, url_prefix="/smart-demo", template_folder="templates",
               static_folder="static", static_url_path="/static")

APP_NAME = "Health Diary (demo SMART app)"
SCOPE = ("openid fhirUser offline_access patient/Patient.rs patient/AllergyIntolerance.rs "
         "patient/MedicationRequest.rs patient/Medication.rs")
REDIRECT_PATH = "/smart-demo/"


def redirect_uris(port: int) -> list[str]:
    """Where the seeded app may be sent back to: this machine's loopback addresses at the port ``hospital run``
    serves (plain http is allowed there only; elsewhere register the app again with its https address)."""
    return [f"http://{host}:{port}{REDIRECT_PATH}" for host in ("127.0.0.1", "localhost")]


@bp.get("/")
def page() -> tuple[str, int]:
    """The demo app: a "Connect" button, then what the app could read with the token it was given."""
    client = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.name == APP_NAME,
                                                            OAuthClient.active.is_(True))
                               .order_by(OAuthClient.id.desc()).limit(1))
    return render("fhir/smart_demo.html", client_id=client.client_id if client else None, scope=SCOPE,
                  fhir_base=url_for("fhir.metadata", _external=True).removesuffix("/metadata"),
                  authorize=url_for("oauth.authorize"), token=url_for("oauth_endpoints.token"))
