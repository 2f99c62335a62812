"""Explicit wiring: a domain's pages, navigation, chart panels and home page exist in an app only because
``create_app`` called that domain's ``init_app``, never because a module was imported."""

from __future__ import annotations

from flask import Flask

import app.pharmacy.views  # noqa: F401  (imported, yet it registers nothing by itself)
from app import web
from app.auth.models import Role


def test_importing_a_domain_registers_nothing_in_another_app(app):
    bare = Flask("bare")
    shared = web.registry(bare)
    assert shared.role_home[Role.PHARMACIST] == "patients.search"
    assert [n.endpoint for n in shared.nav] == [n.endpoint for n in web.CORE_NAV]
    assert shared.chart_panels == [] and shared.chart_links == []
    assert "pharmacy" not in bare.blueprints


def test_create_app_wires_every_domain(app):
    shared = web.registry(app)
    assert shared.role_home[Role.PHARMACIST] == "pharmacy.queue"
    endpoints = [n.endpoint for n in shared.nav]
    assert endpoints[:3] == ["pharmacy.queue", "pharmacy.pickup", "pharmacy.stock"]
    assert endpoints.index("reading.clinic") == endpoints.index("imaging.unmatched") + 1
    assert {"consults", "imaging", "pharmacy", "prescriptions", "reading", "patients"} <= set(app.blueprints)
    assert "imaging/_chart_panel.html" in shared.chart_panels


def test_a_pharmacist_lands_on_the_queue(client, factories, login):
    login(client, factories.pharmacist())
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/pharmacy")
