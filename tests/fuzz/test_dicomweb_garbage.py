"""DICOMweb never answers garbage with a 500: bad UIDs, frame lists, query parameters, Accept headers and
STOW bodies all get a problem+json 4xx (or an empty result)."""

from __future__ import annotations

import re

from pydicom.uid import generate_uid

from app.errors import PROBLEM_JSON
from tests.imaging.dicomgen import ct_slice, stow_body

BAD_UIDS = ["1." + "9" * 70, "not-a-uid", "1..2", "%00", "1.2.3\u00e9"]
BAD_QUERY = [{"limit": "-1"}, {"offset": "x"}, {"limit": "9" * 30}, {"StudyDate": "2024-99-99"},
             {"StudyDate": "20240101-19990101"}, {"includefield": "\x00"}, {"00100010": "*" * 500},
             {"fuzzymatching": "maybe"}, {"window": "a,b,c"}, {"quality": "999"}, {"viewport": "0,-5"},
             "PatientID=%FF%FE&limit=%00", {"ModalitiesInStudy": ""}]
BAD_ACCEPT = ["application/x-garbage", 'multipart/related; type="image/jxl"', "*/*;q=abc", "\x00"]


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/dicomweb/") and "GET" in rule.methods and "<path:" not in rule.rule:
            yield rule.rule


def _fill(rule, uids):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(uids[m.group(1)]), rule)


def _assert_clean(resp, where, *, also: tuple[str, ...] = ()):
    assert resp.status_code < 500, f"{where} -> {resp.status_code}: {resp.get_data(as_text=True)[:300]}"
    if resp.status_code >= 400:
        assert resp.mimetype in (PROBLEM_JSON, *also), where


def test_dicomweb_reads_never_500_on_garbage(app, client, login, factories):
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    real = {"study_uid": generate_uid(), "series_uid": generate_uid(), "sop_uid": generate_uid()}
    body, ctype = stow_body([ct_slice(patient_id=patient.mrn, study_uid=real["study_uid"],
                                      series_uid=real["series_uid"], sop_uid=real["sop_uid"])])
    assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
    routes = list(_routes(app))
    assert len(routes) > 12
    for rule in routes:
        for bad in [None, *BAD_UIDS]:
            uids = {**real, "frame_list": "1", "frame": 1}
            if bad is not None:
                uids = {k: (bad if k.endswith("uid") else v) for k, v in uids.items()}
            path = _fill(rule, uids)
            _assert_clean(client.get(path), path)
        path = _fill(rule, {**real, "frame_list": "1", "frame": 1})
        for frames in ("0", "1,2,x", "99999", "-1", "1," * 200):
            if "frame_list" in rule:
                _assert_clean(client.get(_fill(rule, {**real, "frame_list": frames})), f"{rule} frames={frames}")
        for query in BAD_QUERY:
            _assert_clean(client.get(path, query_string=query), f"{path} {query}")
        for accept in BAD_ACCEPT:
            _assert_clean(client.get(path, headers={"Accept": accept}), f"{path} Accept: {accept!r}")


def test_stow_never_500_on_garbage(client, login, factories):
    login(client, factories.nurse())
    good, ctype = stow_body([ct_slice()])
    boundary = ctype.split("boundary=")[1].strip('"')
    cases = [
        (b"", ctype), (b"\x00" * 100, ctype), (good[: len(good) // 2], ctype), (good, "application/json"),
        (good, "multipart/related"), (good, 'multipart/related; type="application/dicom"; boundary=""'),
        (good, "multipart/related; boundary=" + "x" * 200), (b"--" + boundary.encode() + b"\r\n\r\n\xff\xfe", ctype),
        (good.replace(b"application/dicom", b"application/garbage"), ctype),
        (good.replace(b"DICM", b"DICX"), ctype), (b"--" + boundary.encode() + b"--\r\n", ctype),
    ]
    for n, (body, content_type) in enumerate(cases):
        for path in ("/dicomweb/studies", f"/dicomweb/studies/{generate_uid()}", "/dicomweb/studies/not-a-uid"):
            # A STOW body that parses but stores nothing answers with the standard's failure list (dicom+json).
            _assert_clean(client.post(path, data=body, content_type=content_type), f"STOW case {n} {path}",
                          also=("application/dicom+json",))
