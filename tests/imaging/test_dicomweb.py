"""QIDO-RS and WADO-RS: search filters, access rules, frames, rendered images, metadata."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.imaging.dicomgen import stow_body

ACCEPT_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _qido(client: Any, url: str) -> list[dict[str, Any]]:
    resp = client.get(url)
    assert resp.status_code == 200, resp.data[:300]
    assert resp.mimetype == "application/dicom+json"
    return json.loads(resp.data)


def _uids(items: list[dict[str, Any]]) -> set[str]:
    return {i["0020000D"]["Value"][0] for i in items}


def test_qido_filters_for_clinic_staff(client: Any, login: Any, scans: dict[str, Any]) -> None:
    login(client, scans["nurse"])
    assert _uids(_qido(client, "/dicomweb/studies")) >= {scans["a"], scans["b"]}
    assert _uids(_qido(client, f"/dicomweb/studies?PatientID={scans['mine'].mrn}")) == {scans["a"]}
    assert _uids(_qido(client, "/dicomweb/studies?PatientName=smi*")) == {scans["a"]}
    assert _uids(_qido(client, "/dicomweb/studies?PatientName=J?nes*")) == {scans["b"]}
    assert _uids(_qido(client, f"/dicomweb/studies?StudyDate=20240101-20240131&PatientID={scans['mine'].mrn}")) \
        == {scans["a"]}
    assert _uids(_qido(client, f"/dicomweb/studies?StudyDate=-20231231&PatientID={scans['other'].mrn}")) \
        == {scans["b"]}
    assert _uids(_qido(client, "/dicomweb/studies?AccessionNumber=ACC-B")) == {scans["b"]}
    assert _uids(_qido(client, f"/dicomweb/studies?ModalitiesInStudy=MR&StudyInstanceUID={scans['b']}")) \
        == {scans["b"]}
    assert _qido(client, f"/dicomweb/studies?ModalitiesInStudy=MR&StudyInstanceUID={scans['a']}") == []
    one = _qido(client, f"/dicomweb/studies?StudyInstanceUID={scans['a']}")[0]
    assert one["00201208"]["Value"] == [3] and one["00080061"]["Value"] == ["CT"]
    assert len(_qido(client, "/dicomweb/studies?limit=1")) == 1
    series = _qido(client, f"/dicomweb/studies/{scans['a']}/series")
    assert series[0]["0020000E"]["Value"] == [scans["series"]] and series[0]["00201209"]["Value"] == [3]
    instances = _qido(client, f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances")
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]
    assert client.get("/dicomweb/studies?StudyDate=2024").status_code == 400


def test_doctor_sees_only_patients_in_care_and_patient_sees_nothing_else(
        client: Any, login: Any, factories: Any, scans: dict[str, Any]) -> None:
    login(client, scans["doctor"])
    assert _uids(_qido(client, "/dicomweb/studies")) == {scans["a"]}
    denied = client.get(f"/dicomweb/studies/{scans['b']}/metadata")
    assert denied.status_code == 404 and denied.mimetype == "application/problem+json"
    client.post("/sign-out")
    outsider = factories.nurse(facility=factories.facility())
    login(client, outsider)
    assert _qido(client, "/dicomweb/studies") == []


def test_wado_instance_frames_rendered_and_metadata(client: Any, login: Any, scans: dict[str, Any]) -> None:
    login(client, scans["doctor"])
    inst = _qido(client, f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances")[0]
    sop = inst["00080018"]["Value"][0]
    base = f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances/{sop}"
    whole = client.get(base)
    assert whole.status_code == 200 and whole.content_type.startswith("multipart/related")
    assert b"DICM" in whole.data
    frame = client.get(f"{base}/frames/1", headers={"Accept": ACCEPT_FRAMES})
    assert frame.status_code == 200
    assert len(frame.data) > 64 * 64 * 2
    meta = json.loads(client.get(f"{base}/metadata").data)
    assert meta[0]["00100010"]["Value"][0]["Alphabetic"] == "Smith^Anna"
    assert "BulkDataURI" in meta[0]["7FE00010"]
    jpeg = client.get(f"{base}/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.status_code == 200 and jpeg.mimetype == "image/jpeg"
    img = np.asarray(Image.open(io.BytesIO(jpeg.data)))
    assert img.shape == (64, 64) and img[32, 32] > 200 and img[2, 2] < 60  # bright square on dark tissue
    lung = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/rendered?window=-600,1500").data)))
    assert lung[2, 2] > img[2, 2] + 40  # a wider, lower window brightens soft tissue
    png = client.get(f"{base}/frames/1/rendered", headers={"Accept": "image/png"})
    assert png.mimetype == "image/png"
    assert client.get(f"{base}/frames/2/rendered").status_code == 404


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm",
                                  "SC_rgb_rle_2frame.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_compressed_syntaxes_render(client: Any, factories: Any, login: Any, name: str) -> None:
    login(client, factories.nurse())
    data = Path(get_testdata_file(name)).read_bytes()
    body, ctype = stow_body([data])
    out = json.loads(client.post("/dicomweb/studies", data=body, content_type=ctype).data)
    url = out["00081199"]["Value"][0]["00081190"]["Value"][0]
    study = url.split("/studies/")[1].split("/")[0]
    inst = _qido(client, f"/dicomweb/studies/{study}/instances")[0]
    series, sop = inst["0020000E"]["Value"][0], inst["00080018"]["Value"][0]
    frames = inst.get("00280008", {}).get("Value", [1])[0]
    for f in range(1, int(frames) + 1):
        resp = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{f}/rendered")
        assert resp.status_code == 200, (name, resp.data[:200])
        assert Image.open(io.BytesIO(resp.data)).size[0] > 0
    raw = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1")
    assert raw.status_code == 200


def test_cors_for_configured_origin(client: Any, login: Any, app: Any, scans: dict[str, Any],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "DICOMWEB_CORS_ORIGINS", "https://viewer.example")
    pre = client.options("/dicomweb/studies", headers={"Origin": "https://viewer.example"})
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "Access-Control-Allow-Credentials" not in pre.headers  # bearer tokens only, never the session cookie
    assert "Warning" in pre.headers["Access-Control-Expose-Headers"]  # QIDO warnings reach browser clients
    other = client.options("/dicomweb/studies", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_deidentified_export(client: Any, login: Any, scans: dict[str, Any]) -> None:
    import zipfile

    import pydicom

    login(client, scans["doctor"])
    resp = client.get(f"/scans/studies/{scans['a']}/export.zip")
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.data)) as zf:
        names = zf.namelist()
        assert len(names) == 3
        ds = pydicom.dcmread(io.BytesIO(zf.read(names[0])))
    assert "Smith" not in str(ds.PatientName) and ds.PatientID != scans["mine"].mrn
    assert ds.PatientIdentityRemoved == "YES" and "InstitutionName" not in ds
    assert ds.StudyInstanceUID != scans["a"]
    assert ds.pixel_array.shape == (64, 64)
    import sqlalchemy as sa

    from app import db
    from app.audit.models import AuditEvent
    assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "imaging.study.export",
                                                         AuditEvent.patient_id == scans["mine"].id))


def test_rendered_cache_keys_and_access(client: Any, login: Any, factories: Any, scans: dict[str, Any]) -> None:
    """Cached renders differ per window/size/type, and a cached image is still refused to outsiders."""
    from app.imaging.dicomweb import retrieve

    retrieve.RENDERED_CACHE.clear()
    login(client, scans["doctor"])
    inst = _qido(client, f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances")[0]
    base = f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances/{inst['00080018']['Value'][0]}"
    first = client.get(f"{base}/rendered").data
    assert retrieve.RENDERED_CACHE.cost == len(first)
    assert client.get(f"{base}/rendered").data == first
    assert client.get(f"{base}/rendered?window=-600,1500").data != first
    small = Image.open(io.BytesIO(client.get(f"{base}/rendered?viewport=32,32").data))
    assert small.size == (32, 32)
    assert client.get(f"{base}/rendered", headers={"Accept": "image/png"}).mimetype == "image/png"
    client.post("/sign-out")
    login(client, factories.doctor())
    assert client.get(f"{base}/rendered").status_code == 404


def test_frames_and_renders_revalidate_by_etag_and_stay_audited(client: Any, login: Any, factories: Any,
                                                                 scans: dict[str, Any]) -> None:
    """A viewer that has a frame or a render already gets 304 without the bytes; each revalidation is still an
    audited read, and an outsider holding the tag still gets nothing."""
    import sqlalchemy as sa

    from app import db
    from app.audit.models import AuditEvent

    def reads(action: str) -> int:
        return db.session.scalar(sa.select(sa.func.count()).where(
            AuditEvent.action == action, AuditEvent.actor_id == scans["doctor"].id)) or 0

    login(client, scans["doctor"])
    inst = _qido(client, f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances")[0]
    base = f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances/{inst['00080018']['Value'][0]}"
    for url, headers, action in [(f"{base}/frames/1", {"Accept": ACCEPT_FRAMES}, "imaging.frames.read"),
                                 (f"{base}/rendered", {"Accept": "image/jpeg"}, "imaging.rendered.read")]:
        first = client.get(url, headers=headers)
        etag = first.headers["ETag"]
        assert first.status_code == 200 and "immutable" in first.headers["Cache-Control"]
        assert "private" in first.headers["Cache-Control"]
        before = reads(action)
        again = client.get(url, headers=headers | {"If-None-Match": etag})
        assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
        assert reads(action) == before + 1
        assert client.get(url, headers=headers | {"If-None-Match": 'W/"something-else"'}).status_code == 200
    rendered_tag = client.get(f"{base}/rendered").headers["ETag"]
    assert client.get(f"{base}/rendered?window=-600,1500").headers["ETag"] != rendered_tag
    assert client.get(f"{base}/rendered", headers={"Accept": "image/png"}).headers["ETag"] != rendered_tag
    client.post("/sign-out")
    login(client, factories.doctor())
    assert client.get(f"{base}/rendered", headers={"If-None-Match": rendered_tag}).status_code == 404


def test_lru_evicts_oldest_by_cost() -> None:
    from app.imaging.dicomweb.headers import Lru

    lru = Lru(10, cost=len)
    lru.put("a", b"aaaa")
    lru.put("b", b"bbbb")
    assert lru.get("a") == b"aaaa"  # a is now most recent
    lru.put("c", b"cccc")
    assert lru.get("b") is None and lru.get("a") == b"aaaa" and lru.cost == 8
    lru.put("huge", b"x" * 11)
    assert lru.get("huge") is None and lru.get("a") == b"aaaa"  # too large to keep, and nothing evicted for it


def test_qido_includefield_adds_requested_attributes(client: Any, login: Any, scans: dict[str, Any]) -> None:
    login(client, scans["nurse"])
    plain = _qido(client, f"/dicomweb/studies?StudyInstanceUID={scans['a']}")[0]
    assert "00080080" not in plain  # InstitutionName is not a default study attribute
    one = _qido(client, f"/dicomweb/studies?StudyInstanceUID={scans['a']}&includefield=InstitutionName")[0]
    assert one["00080080"] == {"vr": "LO", "Value": ["Town Clinic"]}
    every = _qido(client, f"/dicomweb/studies?StudyInstanceUID={scans['a']}&includefield=all")[0]
    assert every["00080080"]["Value"] == ["Town Clinic"] and every["00100030"]["Value"] == ["19800101"]
    assert "00280010" not in every  # Rows is an instance attribute, not a study one
    series = _qido(client, f"/dicomweb/studies/{scans['a']}/series?includefield=00200052,StudyDescription")[0]
    assert series["00081030"]["Value"] == ["CT CHEST"]
    inst = _qido(client, f"/dicomweb/studies/{scans['a']}/instances?includefield=all&limit=1")[0]
    assert inst["00281053"]["Value"] == [1] and inst["00080080"]["Value"] == ["Town Clinic"]
    assert "7FE00010" not in inst
    assert client.get("/dicomweb/studies?includefield=NoSuchThing").status_code == 400


def test_metadata_cached_per_content_yet_linked_and_checked_per_request(
        app: Any, client: Any, login: Any, factories: Any, scans: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated metadata request is answered without reading storage again; the frames URL still names the host
    each request came by, every request is still audited, and someone without access still gets nothing."""
    import sqlalchemy as sa
    from werkzeug.middleware.proxy_fix import ProxyFix

    from app import db
    from app.audit.models import AuditEvent
    from app.imaging.dicomweb import retrieve

    def audited() -> int:
        return db.session.scalar(sa.select(sa.func.count()).where(
            AuditEvent.action == "imaging.series.read", AuditEvent.actor_id == scans["doctor"].id)) or 0

    retrieve.METADATA_CACHE.clear()
    store, reads = app.extensions["object_store"], []
    read = store.read
    monkeypatch.setattr(store, "read", lambda key, **kw: reads.append(key) or read(key, **kw))
    login(client, scans["doctor"])
    url = f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/metadata"
    first = client.get(url)
    assert first.status_code == 200 and len(reads) == 3 and retrieve.METADATA_CACHE.cost > 0
    before = audited()
    again = client.get(url)
    assert again.data == first.data and len(reads) == 3 and audited() == before + 1
    items = json.loads(first.data)
    assert all(i["7FE00010"]["BulkDataURI"].startswith("http://localhost/dicomweb/") for i in items)
    assert all(i["00083002"]["Value"] == [i["00020010"]["Value"][0]] for i in items)
    monkeypatch.setattr(app, "wsgi_app", ProxyFix(app.wsgi_app, x_proto=1, x_host=1))
    proxied = json.loads(client.get(url, headers={"X-Forwarded-Host": "pacs.example.org",
                                                  "X-Forwarded-Proto": "https"}).data)
    assert [i["7FE00010"]["BulkDataURI"] for i in proxied] == [
        i["7FE00010"]["BulkDataURI"].replace("http://localhost/", "https://pacs.example.org/") for i in items]
    assert [{**i, "7FE00010": None} for i in proxied] == [{**i, "7FE00010": None} for i in items]
    assert client.get(url).data == first.data and len(reads) == 3  # the cached item was not changed
    client.post("/sign-out")
    login(client, factories.doctor())
    denied = client.get(url)
    assert denied.status_code == 404 and denied.mimetype == "application/problem+json"
