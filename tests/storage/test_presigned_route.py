"""The app serves the filesystem store's presigned links: bytes and ranges for a good link, 403 otherwise."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.imaging.service import object_store
from storage.keys import new_key


def _stored(app: Any, data: bytes) -> tuple[str, str]:
    with app.app_context():
        store = object_store()
        key = new_key("doc")
        store.put(key, io.BytesIO(data))
        return key, store.presigned_get(key, expires_seconds=60)


def test_a_presigned_link_streams_the_object_and_its_ranges(app, client):
    data = bytes(range(256)) * 40
    _key, url = _stored(app, data)
    whole = client.get(url)
    assert whole.status_code == 200 and whole.data == data
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert client.get(url, headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416


def test_a_tampered_expired_or_incomplete_link_is_refused(app, client):
    key, url = _stored(app, b"scan bytes")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    path = urlsplit(url).path
    later = client.get(path, query_string={**query, "expires": str(int(query["expires"]) + 600)})
    assert later.status_code == 403 and b"expired or is not valid" in later.data
    other = client.get(path.replace(key, new_key("doc")), query_string=query)
    assert other.status_code == 403
    assert client.get(path).status_code == 403
    with app.app_context():
        stale = object_store().presigned_get(key, expires_seconds=-1)
    assert client.get(stale).status_code == 403
    with app.app_context():
        object_store().delete(key)
    assert client.get(url).status_code == 404
