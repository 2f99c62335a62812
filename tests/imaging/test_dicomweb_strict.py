"""PS3.18 strictness: 400 for queries the server cannot honour, 406 for representations it cannot give, warnings,
the required return keys, person-name component groups, STOW to one study, transcoded frames, links behind a
proxy, and the dicomweb-client library as a strict client."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import MRImageStorage, generate_uid

from tests.imaging.dicomgen import ct_slice, stow_body

EXPLICIT_LE = "1.2.840.10008.1.2.1"
J2K_FILE = "MR_small_jp2klossless.dcm"  # 64x64, 16 bits, JPEG 2000 lossless


def _json(resp: Any) -> Any:
    assert resp.status_code == 200, resp.data[:300]
    return json.loads(resp.data)


def _uids(items: list[dict[str, Any]], tag: str = "0020000D") -> set[str]:
    return {i[tag]["Value"][0] for i in items}


def _parts(resp: Any) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    boundary = re.search(r"boundary=([^;]+)", resp.headers["Content-Type"]).group(1).strip('"').encode()
    out = []
    for chunk in resp.data.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        ctype = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-type"))
        out.append((ctype, body[:-2]))
    return out


@pytest.mark.parametrize(("url", "needle"), [
    ("/dicomweb/studies?Foo=1", "neither a query parameter nor a DICOM attribute"),
    ("/dicomweb/studies?InstitutionName=Town*", "InstitutionName is not a matching key"),
    ("/dicomweb/studies?Modality=CT", "Modality is not a matching key"),  # a series key at the study level
    ("/dicomweb/series?InstanceNumber=1", "InstanceNumber is not a matching key"),
    ("/dicomweb/studies?00081111.00080050=1", "neither a query parameter nor a DICOM attribute"),
    ("/dicomweb/studies?limit=ten", "limit is a whole number"),
    ("/dicomweb/studies?limit=0", "limit must be at least 1"),
    ("/dicomweb/studies?offset=-1", "offset cannot be negative"),
    ("/dicomweb/studies?fuzzymatching=maybe", "fuzzymatching is true or false"),
    ("/dicomweb/studies?PatientID=A&00100020=B", "PatientID is given more than once"),
    ("/dicomweb/studies?StudyTime=25:00", "StudyTime must be HHMMSS"),
    ("/dicomweb/studies?StudyDate=2024", "StudyDate must be YYYYMMDD"),
    ("/dicomweb/instances?InstanceNumber=first", "InstanceNumber is an integer"),
    ("/dicomweb/studies?PatientName=a=b=c=d", "at most three component groups"),
])
def test_qido_refuses_parameters_it_cannot_honour(client: Any, login: Any, scans: dict[str, Any], url: str,
                                                  needle: str) -> None:
    login(client, scans["nurse"])
    resp = client.get(url)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert needle in resp.get_json()["detail"]


def test_qido_warns_for_fuzzy_matching_and_results_cut_by_a_limit(client: Any, login: Any, scans: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from app.imaging.dicomweb import query

    login(client, scans["nurse"])
    fuzzy = client.get("/dicomweb/studies?fuzzymatching=true&PatientName=smi")
    assert _uids(_json(fuzzy)) == {scans["a"]}
    assert fuzzy.headers["Warning"].startswith("299 ") and "fuzzymatching parameter is not supported" in \
        fuzzy.headers["Warning"]
    assert "Warning" not in client.get("/dicomweb/studies?fuzzymatching=false").headers
    cut = client.get("/dicomweb/studies?limit=1")
    assert len(_json(cut)) == 1 and "exceeded the limit" in cut.headers["Warning"]
    assert "Warning" not in client.get("/dicomweb/studies?limit=2").headers  # exactly two studies: nothing cut
    assert "Warning" not in client.get(f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances"
                                       "?limit=3").headers
    monkeypatch.setattr(query, "MAX_LIMIT", 1)
    capped = client.get("/dicomweb/studies?limit=50")
    assert len(_json(capped)) == 1 and "maximum supported by the server" in capped.headers["Warning"]


@pytest.fixture
def named_study(client: Any, factories: Any, login: Any) -> dict[str, Any]:
    """A study with Japanese person names in all three component groups, a referring physician, a Study ID,
    and a CT and an MR series; stored by a nurse who stays signed in."""
    nurse = factories.nurse()
    login(client, nurse)
    study = generate_uid()
    extra = {"SpecificCharacterSet": "ISO_IR 192", "ReferringPhysicianName": "Okafor^Ngozi=岡^=おか^",
             "StudyID": "S-77", "StudyTime": "143000"}
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ct = [ct_slice(patient_id="JP-1", patient_name=name, study_uid=study, number=n, extra=extra) for n in (1, 2)]
    mr = ct_slice(patient_id="JP-1", patient_name=name, study_uid=study, modality="MR", number=3,
                  extra=extra | {"SOPClassUID": MRImageStorage})
    body, ctype = stow_body([*ct, mr])
    assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
    return {"nurse": nurse, "study": study}


def test_qido_matches_new_keys_and_person_name_groups(client: Any, named_study: dict[str, Any]) -> None:
    study = named_study["study"]

    def studies(q: str) -> set[str]:
        return _uids(_json(client.get(f"/dicomweb/studies?{q}")))

    for q in ("PatientName=yamada", "PatientName=山田", "PatientName=やまだ", "PatientName=YAMADA^Tar*",
              "PatientName=*tarou", "PatientName==山田", "PatientName===やまだ^た", "ReferringPhysicianName=okafor",
              "ReferringPhysicianName=岡", "StudyID=S-77", "StudyTime=1400-1500", "StudyTime=1430",
              "StudyTime=14", "00080030=-1430"):
        assert study in studies(q), q
    for q in ("PatientName=tarou", "PatientName==やまだ", "PatientName==*たろう", "PatientName=*たろう=",
              "PatientName===たろう", "ReferringPhysicianName=ngozi", "StudyID=S-7",
              "StudyTime=1431-", "StudyTime=-1429", "StudyTime=15"):
        assert study not in studies(q), q
    found = _json(client.get(f"/dicomweb/studies?StudyInstanceUID={study}"))[0]
    assert found["00100010"]["Value"] == [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
                                           "Phonetic": "やまだ^たろう"}]
    assert found["00080090"]["Value"] == [{"Alphabetic": "Okafor^Ngozi", "Ideographic": "岡^",
                                           "Phonetic": "おか^"}]
    mr = _json(client.get(f"/dicomweb/studies/{study}/instances?SOPClassUID={MRImageStorage}"))
    assert [i["00200013"]["Value"] for i in mr] == [[3]]
    two = _json(client.get(f"/dicomweb/studies/{study}/instances?InstanceNumber=2"))
    assert [i["00200013"]["Value"] for i in two] == [[2]]


def test_qido_answers_carry_the_required_return_keys(client: Any, named_study: dict[str, Any]) -> None:
    study = named_study["study"]
    found = _json(client.get(f"/dicomweb/studies?StudyInstanceUID={study}"))[0]
    assert found["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}  # InstanceAvailability
    assert found["00200010"]["Value"] == ["S-77"] and found["00080030"]["Value"] == ["143000"]
    series = _json(client.get(f"/dicomweb/studies/{study}/series"))
    assert all(s["00080056"]["Value"] == ["ONLINE"] for s in series)
    inst = _json(client.get(f"/dicomweb/studies/{study}/instances"))[0]
    assert inst["00080056"]["Value"] == ["ONLINE"]
    assert inst["00280100"] == {"vr": "US", "Value": [16]}  # BitsAllocated
    assert {"00080016", "00080018", "00200013", "00280010", "00280011", "00280008", "00081190"} <= inst.keys()
    # a search that names no study (or series) in its path returns their attributes too
    across = _json(client.get(f"/dicomweb/series?StudyInstanceUID={study}&Modality=MR"))[0]
    assert across["00100010"]["Value"][0]["Alphabetic"] == "Yamada^Tarou" and across["00200010"]["Value"] == ["S-77"]
    assert across["00081190"]["Value"][0].endswith(f"/studies/{study}/series/{across['0020000E']['Value'][0]}")
    anywhere = _json(client.get(f"/dicomweb/instances?StudyInstanceUID={study}&InstanceNumber=3"))[0]
    assert anywhere["0008103E"]["Value"] == ["Axial"] and anywhere["00080020"]["Value"] == ["20240115"]
    assert "00100010" not in series[0] and "00100010" not in inst  # the study is named in the path
    assert inst["0008103E"]["Value"] == ["Axial"]  # /studies/{study}/instances names no series


def test_unsatisfiable_accept_answers_406(client: Any, login: Any, scans: dict[str, Any]) -> None:
    login(client, scans["nurse"])
    inst = _json(client.get(f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances"))[0]
    base = f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances/{inst['00080018']['Value'][0]}"
    cases = [
        ("/dicomweb/studies", "application/dicom+xml"),
        (f"{base}/metadata", 'multipart/related; type="application/dicom+xml"'),
        (f"{base}/rendered", "image/gif"),
        (base, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'),
        (base, 'multipart/related; type="application/pdf"'),
        (f"{base}/frames/1", 'multipart/related; type="image/jpeg"'),
        (f"{base}/frames/1", 'multipart/related; type="image/jp2"; transfer-syntax=*'.replace("*", "1.2.3")),
    ]
    for url, accept in cases:
        resp = client.get(url, headers={"Accept": accept})
        assert resp.status_code == 406, (url, accept, resp.status_code)
        assert resp.mimetype == "application/problem+json"
    # what it can give is still given, and the first acceptable choice wins
    ok = client.get(base, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                             'transfer-syntax=1.2.840.10008.1.2.4.50, multipart/related; '
                                             'type="application/dicom"; transfer-syntax=*'})
    assert ok.status_code == 200 and b"DICM" in ok.data


def _store_file(client: Any, name: str) -> tuple[str, str, str]:
    body, ctype = stow_body([Path(get_testdata_file(name)).read_bytes()])
    out = json.loads(client.post("/dicomweb/studies", data=body, content_type=ctype).data)
    url = out["00081199"]["Value"][0]["00081190"]["Value"][0]
    study = url.split("/studies/")[1].split("/")[0]
    inst = _json(client.get(f"/dicomweb/studies/{study}/instances"))[0]
    return study, inst["0020000E"]["Value"][0], inst["00080018"]["Value"][0]


def test_frames_in_an_explicit_syntax_are_decompressed_or_refused(client: Any, factories: Any,
                                                                  login: Any) -> None:
    login(client, factories.nurse())
    study, series, sop = _store_file(client, J2K_FILE)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    expected = pydicom.dcmread(get_testdata_file(J2K_FILE)).pixel_array
    for accept in (f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}',
                   'multipart/related; type="application/octet-stream"'):  # the default syntax is Explicit VR LE
        resp = client.get(url, headers={"Accept": accept})
        assert resp.status_code == 200
        [(ctype, body)] = _parts(resp)
        assert ctype == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        assert np.array_equal(np.frombuffer(body, dtype="<" + expected.dtype.str[1:]).reshape(64, 64), expected)
    stored = _parts(client.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"; '
                                                       'transfer-syntax=*'}))
    assert stored[0][0] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90" or \
        stored[0][0] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
    assert client.get(url, headers={"Accept": 'multipart/related; type="image/jpeg"'}).status_code == 406
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    whole = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", headers={"Accept": accept})
    [(ctype, body)] = _parts(whole)
    assert ctype == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE and np.array_equal(ds.pixel_array, expected)


def test_stow_to_a_study_refuses_instances_of_another_study(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.nurse())
    study, stranger_study = generate_uid(), generate_uid()
    mine = ct_slice(patient_id="STOW-1", study_uid=study)
    stranger = ct_slice(patient_id="STOW-1", study_uid=stranger_study)
    stranger_sop = pydicom.dcmread(io.BytesIO(stranger)).SOPInstanceUID
    body, ctype = stow_body([mine, stranger])
    resp = client.post(f"/dicomweb/studies/{study}", data=body, content_type=ctype)
    assert resp.status_code == 202
    out = json.loads(resp.data)
    assert len(out["00081199"]["Value"]) == 1
    [failed] = out["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [stranger_sop] and failed["00081197"]["Value"] == [0xC409]
    assert "another study" in failed["00000902"]["Value"][0]
    assert _json(client.get(f"/dicomweb/studies?StudyInstanceUID={stranger_study}")) == []
    body, ctype = stow_body([stranger])
    only_stranger = client.post(f"/dicomweb/studies/{study}", data=body, content_type=ctype)
    assert only_stranger.status_code == 409
    assert _json(client.get(f"/dicomweb/instances?SOPInstanceUID={stranger_sop}")) == []


def test_links_name_the_proxy_when_proxies_are_trusted(app: Any, client: Any, login: Any, scans: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    login(client, scans["nurse"])
    proxied = {"X-Forwarded-Host": "pacs.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/h"}
    assert _json(client.get(f"/dicomweb/studies?StudyInstanceUID={scans['a']}", headers=proxied))[0][
        "00081190"]["Value"][0].startswith("http://localhost/dicomweb/")  # untrusted headers change nothing
    monkeypatch.setattr(app, "wsgi_app", ProxyFix(app.wsgi_app, x_proto=1, x_host=1, x_prefix=1))
    study = _json(client.get(f"/dicomweb/studies?StudyInstanceUID={scans['a']}", headers=proxied))[0]
    assert study["00081190"]["Value"] == [f"https://pacs.example.org/h/dicomweb/studies/{scans['a']}"]
    inst = _json(client.get(f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances", headers=proxied))
    sop = inst[0]["00080018"]["Value"][0]
    url = f"https://pacs.example.org/h/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances/{sop}"
    assert inst[0]["00081190"]["Value"] == [url]
    meta = _json(client.get(f"/dicomweb/studies/{scans['a']}/series/{scans['series']}/instances/{sop}/metadata",
                            headers=proxied))
    assert meta[0]["7FE00010"]["BulkDataURI"] == f"{url}/frames/1"
    body, ctype = stow_body([ct_slice(patient_id="PROXY-1")])
    stored = json.loads(client.post("/dicomweb/studies", data=body, content_type=ctype, headers=proxied).data)
    assert stored["00081199"]["Value"][0]["00081190"]["Value"][0].startswith("https://pacs.example.org/h/dicomweb/")


def test_trusted_proxies_setting_puts_proxy_fix_in_front(test_config: Any, engine: Any) -> None:
    import copy

    from werkzeug.middleware.proxy_fix import ProxyFix

    from app import create_app, db

    cfg = copy.copy(test_config)
    cfg.TRUSTED_PROXIES = 2
    try:
        behind = create_app(cfg)
    finally:
        db.session.remove()
        db.session.configure(bind=engine)  # create_app binds the shared session to its own engine
    assert isinstance(behind.wsgi_app, ProxyFix) and behind.wsgi_app.x_host == 2
    behind.extensions["db_engine"].dispose()


def test_dicomweb_client_as_a_strict_client(live_server: str, live_factories: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    from tests.http import signed_in

    nurse = live_factories.nurse(email=f"strict-{generate_uid()[-8:]}@test.example")
    dw = DICOMwebClient(url=f"{live_server}/dicomweb", session=signed_in(live_server, nurse))
    j2k = pydicom.dcmread(get_testdata_file(J2K_FILE))
    patient = f"STRICT-{generate_uid()[-6:]}"
    # new UIDs throughout: this data is committed, and other tests store the bundled file as it is
    j2k.PatientID, j2k.StudyInstanceUID, j2k.SeriesInstanceUID = patient, generate_uid(), generate_uid()
    j2k.SOPInstanceUID = j2k.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    second = pydicom.dcmread(io.BytesIO(ct_slice(patient_id=patient)))
    assert len(dw.store_instances(datasets=[j2k, second]).ReferencedSOPSequence) == 2

    with caplog.at_level("WARNING", logger="dicomweb_client"):
        found = dw.search_for_studies(search_filters={"PatientID": patient}, fuzzymatching=True)
    assert len(found) == 2 and any("fuzzymatching parameter is not supported" in r.message for r in caplog.records)
    paged = dw.search_for_studies(search_filters={"PatientID": patient}, limit=1, get_remaining=True)
    assert _uids(paged) == {j2k.StudyInstanceUID, second.StudyInstanceUID}
    with pytest.raises(requests.HTTPError) as refused:
        dw.search_for_studies(search_filters={"InstitutionName": "Town*"})
    assert refused.value.response.status_code == 400

    [frame] = dw.retrieve_instance_frames(j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID,
                                          frame_numbers=[1], media_types=(("application/octet-stream", EXPLICIT_LE),))
    assert np.array_equal(np.frombuffer(frame, dtype="<i2" if j2k.PixelRepresentation else "<u2").reshape(64, 64),
                          j2k.pixel_array)
    with pytest.raises(requests.HTTPError) as not_acceptable:
        dw.retrieve_instance_frames(j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID,
                                    frame_numbers=[1], media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),))
    assert not_acceptable.value.response.status_code == 406
    decoded = dw.retrieve_instance(j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID,
                                   media_types=(("application/dicom", EXPLICIT_LE),))
    assert decoded.file_meta.TransferSyntaxUID == EXPLICIT_LE and np.array_equal(decoded.pixel_array,
                                                                                   j2k.pixel_array)
    with pytest.raises(requests.HTTPError) as other_study:
        dw.store_instances(datasets=[pydicom.dcmread(io.BytesIO(ct_slice(patient_id=patient)))],
                           study_instance_uid=j2k.StudyInstanceUID)
    assert other_study.value.response.status_code == 409
