"""Every HTML form route, posted garbage by every role: the friendly error page or the form again with the field
named, never the 500 page. Routes are read from the URL map, so a new form is covered without a test edit."""

from __future__ import annotations

import re

from app.errors import PROBLEM_JSON

FIELD_RE = re.compile(r'<(?:input|select|textarea)[^>]*\bname="([^"]+)"')
WEIRD = ["\u0000", "-1e309", "9" * 40, "31/02/1990", "x" * 5000]
ROLES = ("clinic_staff", "doctor", "pharmacist", "admin", "patient")
SAME_FOR_EVERY_ROLE = ("/account/", "/sign-in", "/oauth/")
"""Forms that work alike whoever posts them are fuzzed as the first role only (some check a password: slow)."""


def _form_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/", "/dicomweb", "/static", "/fhir")) or "POST" not in rule.methods:
            continue
        yield rule


def _path(rule, ids):
    path = rule.rule
    for name in rule.arguments:
        value = ids.get(name, "allergies" if name == "kind" else "1")
        path = re.sub(rf"<(?:[^:<>]+:)?{name}>", str(value), path)
    return path


def _bodies(fields):
    yield "undecodable", b"&".join(f.encode() + b"=%ff%fe\xff\xfe" for f in fields), \
        "application/x-www-form-urlencoded"
    for n, value in enumerate(WEIRD):
        yield f"weird-{n}", {f: value for f in fields}, None
    yield "lists", b"&".join(f.encode() + b"=1&" + f.encode() + b"=2" for f in fields), \
        "application/x-www-form-urlencoded"
    yield "oversize", b"name=" + b"x" * 600_000, "application/x-www-form-urlencoded"
    yield "not a form", b"\x00\x01{[", "application/json"
    yield "broken multipart", b"--zz\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\nabc", \
        "multipart/form-data; boundary=zz"


def test_every_form_answers_garbage_without_a_500(app, make_client, login, factories):
    """Each form is posted as the roles whose page shows it (all roles for forms without a page of their own)."""
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    users = {"clinic_staff": factories.nurse(), "doctor": doctor, "pharmacist": factories.pharmacist(),
             "admin": factories.admin(), "patient": patient.user}
    clients = {}
    for role, user in users.items():
        clients[role] = make_client()
        login(clients[role], user)
    seen = 0
    for rule in _form_routes(app):
        if rule.endpoint in ("auth.sign_out", "auth.mfa_remove"):
            continue  # they end the session the rest of the test needs
        posters = list(ROLES[:1]) if rule.rule.startswith(SAME_FOR_EVERY_ROLE) else list(ROLES)
        fields: set[str] = set()
        if "GET" in rule.methods:
            pages = {role: clients[role].get(_path(rule, {"patient_id": patient.id, "user_id": users[role].id}))
                     for role in posters}
            shown = [role for role, page in pages.items() if page.status_code == 200]
            posters = shown or posters[:1]
            for role in shown:
                fields |= set(FIELD_RE.findall(pages[role].get_data(as_text=True)))
        fields = (fields - {"csrf_token"}) or {"name", "email", "birth_date", "quantity", "code", "files", "token"}
        for role in posters:
            path = _path(rule, {"patient_id": patient.id, "user_id": users[role].id})
            for label, body, content_type in _bodies(fields):
                kwargs = {"data": body, "headers": {"Accept": "text/html"}}
                if content_type:
                    kwargs["content_type"] = content_type
                resp = clients[role].post(path, **kwargs)
                seen += 1
                where = f"{role} POST {path} [{label}] -> {resp.status_code}"
                assert resp.status_code < 500, f"{where}: {resp.get_data(as_text=True)[:300]}"
                if resp.status_code >= 400 and resp.mimetype != PROBLEM_JSON and not path.startswith("/oauth/"):
                    assert resp.mimetype == "text/html", where
                    assert "Something went wrong" not in resp.get_data(as_text=True), where
    assert seen > 200
