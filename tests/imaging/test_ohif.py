"""The OHIF viewer (v3, prebuilt from the npm registry into tests/npm/ohif) against the platform's DICOMweb, in
Chromium.

OHIF is served on the platform's own origin, as a hospital would put it behind one reverse proxy with the app:
its requests carry the signed-in session like the platform's own pages, and every read is authorised and audited
as the chart's are. The study list finds the study through QIDO-RS; the viewer loads it through QIDO-RS, WADO-RS
metadata and frames, and draws the slices.
"""

from __future__ import annotations

import io
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from flask import Flask
from PIL import Image
from pydicom.uid import generate_uid
from werkzeug.wrappers import Response

from tests.conftest import serve_wsgi
from tests.http import signed_in
from tests.imaging.dicomgen import ct_slice, stow_body

pytestmark = pytest.mark.browser

OHIF_DIST = (Path(__file__).resolve().parents[1] / "npm" / "ohif" / "node_modules" / "@ohif" / "app" / "dist").resolve()
PLATFORM_PATHS = ("/dicomweb/", "/sign-in", "/sign-out", "/api/", "/static/", "/oauth/", "/.well-known/")
APP_CONFIG = """localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));  // no onboarding tour
window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  maxNumberOfWebWorkers: 2,
  investigationalUseDialog: {option: 'never'},
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  defaultDataSourceName: 'townhealth',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'townhealth',
    configuration: {
      friendlyName: 'Town Health',
      name: 'townhealth',
      wadoUriRoot: '/dicomweb',
      qidoRoot: '/dicomweb',
      wadoRoot: '/dicomweb',
      qidoSupportsIncludeField: true,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      staticWado: false,
      singlepart: false,
      bulkDataURI: {enabled: true},
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


def _ohif_and_platform(platform: Flask) -> Any:
    """One WSGI app: the platform's paths go to the platform, everything else is OHIF (a single-page app)."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path.startswith(PLATFORM_PATHS):
            return platform(environ, start_response)
        if path == "/app-config.js":
            resp = Response(APP_CONFIG, mimetype="application/javascript")
        else:
            file = (OHIF_DIST / path.lstrip("/")).resolve()
            if not file.is_file() or OHIF_DIST not in file.parents:
                file = OHIF_DIST / "index.html"
            media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            resp = Response(file.read_bytes(), mimetype=media)
        return resp(environ, start_response)

    return wsgi


@pytest.fixture
def ohif_server(app: Flask) -> Iterator[str]:
    if not (OHIF_DIST / "index.html").is_file():
        pytest.fail("OHIF is not installed: run `npm ci --prefix tests/npm/ohif` (the CI script does)")
    with serve_wsgi(_ohif_and_platform(app)) as url:
        yield url


@pytest.fixture
def ohif_study(ohif_server: str, care_team: dict[str, Any]) -> dict[str, Any]:
    """A five-slice CT study of a patient in a doctor's care, sent by the clinic over STOW-RS."""
    nurse, doctor, patient, tag = care_team["nurse"], care_team["doctor"], care_team["patient"], care_team["tag"]
    study, series = generate_uid(), generate_uid()
    files = [ct_slice(patient_id=patient.mrn, patient_name=f"Ohif^Tester{tag}", study_uid=study, series_uid=series,
                      number=n, size=256, description=f"CT HEAD {tag}") for n in range(1, 6)]
    body, ctype = stow_body(files)
    stored = signed_in(ohif_server, nurse).post(f"{ohif_server}/dicomweb/studies", data=body,
                                                headers={"Content-Type": ctype}, timeout=30)
    assert stored.status_code == 200, stored.text[:300]
    return {"doctor": doctor, "study": study, "series": series, "tag": tag, "mrn": patient.mrn,
            "first": pydicom.dcmread(io.BytesIO(files[0]))}


def test_ohif_lists_and_shows_a_study_from_the_platform(ohif_server: str, ohif_study: dict[str, Any],
                                                        new_browser: Any, browser_login: Any,
                                                        artifacts_dir: Path) -> None:
    page = new_browser().new_page()
    dicomweb: list[tuple[int, str]] = []
    page.on("response", lambda r: dicomweb.append((r.status, r.url)) if "/dicomweb/" in r.url else None)
    browser_login(page, ohif_server, ohif_study["doctor"])

    page.goto(f"{ohif_server}/")
    row = page.locator("tr, [role=row], div").filter(has_text=f"CT HEAD {ohif_study['tag']}").last
    row.wait_for(timeout=30_000)
    listed = page.inner_text("body")
    assert f"Ohif, Tester{ohif_study['tag']}" in listed and "15-Jan-2024" in listed
    searches = [url for status, url in dicomweb if "/dicomweb/studies?" in url and status == 200]
    assert searches, dicomweb[:10]

    page.goto(f"{ohif_server}/viewer?StudyInstanceUIDs={ohif_study['study']}")
    page.wait_for_function("() => [...document.querySelectorAll('canvas')].some(c => c.width > 100)",
                           timeout=60_000)
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some(e => e.name.includes('/frames/'))", timeout=60_000)
    page.wait_for_function("() => document.body.innerText.includes('(1/5)')", timeout=30_000)  # slice 1 of 5
    frames = [(status, url) for status, url in dicomweb if "/frames/" in url]
    assert frames and all(status == 200 for status, _ in frames), frames[:5]
    assert any(url.endswith("/metadata") and status == 200 for status, url in dicomweb)
    assert not [(s, u) for s, u in dicomweb if s >= 400], [(s, u) for s, u in dicomweb if s >= 400][:5]
    shot = artifacts_dir / "ohif-viewer.png"
    viewport = page.locator("canvas").first
    viewport.screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("L")).astype(int)
    height, width = pixels.shape
    centre = pixels[height * 2 // 5:height * 3 // 5, width * 2 // 5:width * 3 // 5]
    tissue = pixels[height * 4 // 5:height * 9 // 10, width // 5:width * 2 // 5]
    assert centre.mean() > 200 and 40 < tissue.mean() < 170, "the slice (a bright square on tissue) is not drawn"


served: dict[str, str] = {}


def _ohif_only(config: str) -> Any:
    """OHIF alone on its own origin, with ``config`` (or, when empty, ``served["config"]``) as its app-config.js."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path == "/app-config.js":
            return Response(config or served["config"], mimetype="application/javascript")(environ, start_response)
        return _ohif_and_platform(lambda *_a: [])(environ, start_response)

    return wsgi


def _access_token(base: str, person: Any, redirect_uri: str) -> str:
    """An access token for ``person`` from the platform's authorization server (code + PKCE), as OHIF's
    OpenID Connect client would obtain it."""
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session

    from app import db
    from app.auth import oauth_service
    from tests.auth.conftest import browser_session, consent
    from tests.factories import Factories

    registered, _ = oauth_service.register_client(oauth_service.ClientInput(
        name="OHIF viewer", is_public=True, redirect_uris=[redirect_uri], scope="openid user/ImagingStudy.rs",
        grants=["authorization_code"]), by=Factories().admin())
    db.session.commit()
    client = OAuth2Session(registered.client_id, scope="openid user/ImagingStudy.rs", redirect_uri=redirect_uri,
                           code_challenge_method="S256", token_endpoint_auth_method="none")
    verifier = generate_token(48)
    url, _state = client.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier,
                                                  nonce=generate_token(16))
    answer = consent(browser_session(base, person), url)
    token = client.fetch_token(f"{base}/oauth/token", authorization_response=answer.headers["Location"],
                               code_verifier=verifier)
    return token["access_token"]


def test_ohif_on_its_own_origin_shows_a_study_with_a_bearer_token(
        app: Flask, live_server: str, ohif_study: dict[str, Any], new_browser: Any, artifacts_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = f"'{live_server}/dicomweb'"
    config = APP_CONFIG.replace("'/dicomweb'", root)
    with serve_wsgi(_ohif_only(config)) as viewer_origin:
        monkeypatch.setitem(app.config, "DICOMWEB_CORS_ORIGINS", viewer_origin)
        token = _access_token(live_server, ohif_study["doctor"], f"{viewer_origin}/callback")
        page = new_browser().new_page()
        dicomweb: list[tuple[int, str]] = []
        page.on("response", lambda r: dicomweb.append((r.status, r.url)) if "/dicomweb/" in r.url else None)
        page.goto(f"{viewer_origin}/viewer?StudyInstanceUIDs={ohif_study['study']}&token={token}")
        page.wait_for_function("() => document.body.innerText.includes('(1/5)')", timeout=60_000)
        page.wait_for_function(
            "() => performance.getEntriesByType('resource').some(e => e.name.includes('/frames/'))", timeout=60_000)
        assert "token=" not in page.url  # OHIF takes the token out of the address bar
        frames = [(status, url) for status, url in dicomweb if "/frames/" in url]
        assert frames and all(status == 200 for status, _ in frames), frames[:5]
        assert all(url.startswith(live_server) for _, url in dicomweb)
        shot = artifacts_dir / "ohif-viewer-bearer.png"
        page.locator("canvas").first.screenshot(path=str(shot))
        pixels = np.asarray(Image.open(shot).convert("L")).astype(int)
        height, width = pixels.shape
        assert pixels[height * 2 // 5:height * 3 // 5, width * 2 // 5:width * 3 // 5].mean() > 200


def test_ohif_signs_in_through_the_platforms_openid_connect(
        live_server: str, ohif_study: dict[str, Any], new_browser: Any, artifacts_dir: Path) -> None:
    """OHIF on its own origin, registered as an OAuth app with that web origin: the person signs in on the
    platform's own page, consents, and OHIF lists and shows the study with the token it obtained (CORS on
    discovery, token and JWKS, and on DICOMweb, for the registered origin only)."""
    from app import db
    from app.auth import oauth_service
    from tests.conftest import PASSWORD
    from tests.factories import Factories

    with serve_wsgi(_ohif_only("")) as viewer_origin:
        registered, _ = oauth_service.register_client(oauth_service.ClientInput(
            name="OHIF viewer", is_public=True, redirect_uris=[f"{viewer_origin}/callback"],
            scope="openid user/ImagingStudy.rs", grants=["authorization_code"], web_origins=[viewer_origin]),
            by=Factories().admin())
        db.session.commit()
        oidc = (f"oidc: [{{authority: '{live_server}', client_id: '{registered.client_id}', "
                "redirect_uri: '/callback', response_type: 'code', scope: 'openid user/ImagingStudy.rs', "
                "post_logout_redirect_uri: '/', automaticSilentRenew: false}],\n  routerBasename:")
        config = APP_CONFIG.replace("'/dicomweb'", f"'{live_server}/dicomweb'").replace("routerBasename:", oidc, 1)
        served["config"] = config
        page = new_browser().new_page()
        dicomweb: list[tuple[int, str]] = []
        page.on("response", lambda r: dicomweb.append((r.status, r.url)) if "/dicomweb/" in r.url else None)
        bearer: list[bool] = []
        page.on("request", lambda r: bearer.append(r.headers.get("authorization", "").startswith("Bearer "))
                if "/dicomweb/" in r.url and r.method == "GET" else None)
        page.goto(f"{viewer_origin}/")
        page.wait_for_url(f"{live_server}/sign-in**", timeout=30_000)  # the platform's own sign-in page
        page.fill("#email", ohif_study["doctor"].email)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.click("button[name=decision][value=allow]")
        page.wait_for_url(f"{viewer_origin}/**", timeout=30_000)
        page.locator("div").filter(has_text=f"CT HEAD {ohif_study['tag']}").last.wait_for(timeout=30_000)
        page.goto(f"{viewer_origin}/viewer?StudyInstanceUIDs={ohif_study['study']}")
        page.wait_for_function("() => document.body.innerText.includes('(1/5)')", timeout=60_000)
        frames = [(status, url) for status, url in dicomweb if "/frames/" in url]
        assert frames and all(status == 200 for status, _ in frames), frames[:5]
        assert any("/dicomweb/studies?" in url and status == 200 for status, url in dicomweb)
        assert bearer and all(bearer)  # every DICOMweb request carried the token OHIF got from the platform
        page.screenshot(path=str(artifacts_dir / "ohif-oidc.png"))
