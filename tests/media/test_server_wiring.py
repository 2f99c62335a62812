"""The media service as deployed: relay and recording mounted by ``create_app``, recordings in object storage."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from media.server import (
    RecordingSettings,
    create_app,
    object_store_uploader,
    recording_master_key,
)
from storage import recording_format
from storage.fs import FilesystemStore
from storage.recording_format import decrypt, derive_key
from tests.media.relay_support import SECRET, Participant, allow_loopback, rtc_config, wait_for

MASTER = b"k" * 32


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    allow_loopback(monkeypatch)


def recorded_call(tmp_path: Path, store: FilesystemStore, consent: dict[str, Any]) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        settings = RecordingSettings(master_key=MASTER, workdir=tmp_path / "work",
                                     uploader=object_store_uploader(store))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            app = create_app(SECRET, ice_configuration=rtc_config(), recording=settings)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {SECRET}"})
        url = str(server.make_url("/relay/consult-w"))
        a, b = Participant("a", "red"), Participant("b", "green")
        try:
            await a.negotiate(http, url, others=0)
            await b.negotiate(http, url, others=1)
            assert await wait_for(lambda: b.frames_from("a").frames > 5, timeout=10)
            async with http.post(f"{url}/recording", json=consent) as resp:
                started = resp.status, await resp.json()
            began = time.monotonic()
            await asyncio.sleep(3.0)
            async with http.delete(f"{url}/recording") as resp:
                stopped = resp.status, await resp.json()
            return {"started": started, "stopped": stopped, "length": time.monotonic() - began}
        finally:
            await a.close()
            await b.close()
            await http.close()
            await server.close()

    return asyncio.run(scenario())


def test_create_app_records_into_the_object_store_encrypted(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects", secret=b"s" * 32)
    result = recorded_call(tmp_path, store, {"consent_id": "consent-1"})
    assert result["started"][0] == 201, result
    assert result["stopped"][0] == 200, result
    recording_id = result["started"][1]["recording_id"]
    key = recording_format.object_key(recording_id)
    assert recording_id in key and store.exists(key)
    ciphertext = store.read(key)
    assert b"\x1a\x45\xdf\xa3" not in ciphertext
    plain = tmp_path / "played.webm"
    plain.write_bytes(b"".join(decrypt(iter_stream(ciphertext), derive_key(MASTER, recording_id))))
    with av.open(str(plain)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "audio", "video", "video"]
        assert container.duration / 1e6 >= 0.8 * result["length"]


def test_create_app_without_consent_stores_nothing(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects", secret=b"s" * 32)
    result = recorded_call(tmp_path, store, {})
    assert result["started"][0] == 403
    assert result["stopped"][0] == 404
    assert list(store.list("recordings/")) == []


def iter_stream(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def test_recording_master_key_is_configured_or_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSPITAL_RECORDING_KEY", raising=False)
    derived = recording_master_key("a" * 40)
    assert len(derived) == 32 and derived != recording_master_key("b" * 40)
    monkeypatch.setenv("HOSPITAL_RECORDING_KEY", "ab" * 32)
    assert recording_master_key("a" * 40) == bytes.fromhex("ab" * 32)
    monkeypatch.setenv("HOSPITAL_RECORDING_KEY", "short")
    with pytest.raises(ValueError):
        recording_master_key()
