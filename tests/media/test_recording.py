"""Recording a relayed consult: only with consent, encrypted, playable, as long as the call."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from pathlib import Path
from typing import IO, Any

import av
import pytest
from aiohttp import web
from cryptography.exceptions import InvalidTag

from media.recording import (
    Recording,
    RecordingRefused,
    salvage,
    setup_recording_routes,
    start_recording,
)
from media.relay import RELAY
from storage import recording_format
from storage.recording_format import decrypt, derive_key, encrypt_file, read_header
from tests.media.relay_support import Participant, allow_loopback, dominant, relay_server, wait_for

MASTER = b"m" * 32


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    allow_loopback(monkeypatch)


class Store:
    """Stands in for object storage: keeps what the uploader was handed."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[Recording, bytes]] = {}

    async def upload(self, recording: Recording, fh: IO[bytes]) -> None:
        self.objects[recording.recording_id] = (recording, fh.read())


def call(workdir: Path, store: Store, *, consent: dict[str, Any], seconds: float,
         snapshot: Path | None = None) -> dict[str, Any]:
    """A two-party relayed call; asks the media service to record it with ``consent``; returns what happened.
    ``snapshot``: copy the work directory there just before the stop, as a worker killed then would leave it."""
    async def scenario() -> dict[str, Any]:
        def mount(app: web.Application) -> None:
            setup_recording_routes(app, master_key=MASTER, workdir=workdir, uploader=store.upload)

        async with relay_server(mount) as (server, http):
            url = str(server.make_url("/relay/consult-r"))
            a, b = Participant("a", "red"), Participant("b", "green")
            try:
                await a.negotiate(http, url, others=0)
                await b.negotiate(http, url, others=1)
                assert await wait_for(lambda: b.frames_from("a").frames > 5, timeout=10)
                async with http.post(f"{url}/recording", json=consent) as resp:
                    started = resp.status, await resp.json()
                began = time.monotonic()
                await asyncio.sleep(seconds)
                if snapshot is not None:
                    shutil.copytree(workdir, snapshot)
                async with http.delete(f"{url}/recording") as resp:
                    stopped = resp.status, await resp.json()
                length = time.monotonic() - began
            finally:
                await a.close()
                await b.close()
            return {"started": started, "stopped": stopped, "length": length,
                    "rooms": list(server.app[RELAY].rooms)}

    return asyncio.run(scenario())


def test_a_consented_recording_is_encrypted_playable_and_as_long_as_the_call(tmp_path: Path) -> None:
    store = Store()
    result = call(tmp_path, store, consent={"consent_id": "consent-42"}, seconds=8.0)
    assert result["started"][0] == 201
    assert result["stopped"][0] == 200
    recording_id = result["started"][1]["recording_id"]
    recording, ciphertext = store.objects[recording_id]
    assert recording.consent_id == "consent-42" and recording.participants == ["a", "b"]
    assert b"\x1a\x45\xdf\xa3" not in ciphertext  # no WebM (EBML) header in the clear
    assert list(tmp_path.iterdir()) == []  # neither plaintext nor ciphertext left on the media host

    plain = tmp_path / "played.webm"
    plain.write_bytes(b"".join(decrypt(io.BytesIO(ciphertext), derive_key(MASTER, recording_id))))
    with av.open(str(plain)) as container:
        assert abs(container.duration / 1e6 - result["length"]) <= 0.1 * result["length"], container.duration
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "audio", "video", "video"]
        owners = {s.metadata.get("title"): s.index for s in container.streams.video}
    colours = {}
    for owner, index in owners.items():
        with av.open(str(plain)) as container:
            frames = list(container.decode(container.streams[index]))
        assert len(frames) >= 0.8 * 30 * result["length"]  # close to every frame of the call
        colours[owner] = dominant(frames[-1])
    assert colours == {"a": "red", "b": "green"}


def test_no_consent_no_recording(tmp_path: Path) -> None:
    store = Store()
    result = call(tmp_path, store, consent={}, seconds=0.5)
    assert result["started"][0] == 403
    assert result["stopped"][0] == 404
    assert store.objects == {}
    assert list(tmp_path.iterdir()) == []

    async def direct() -> None:
        with pytest.raises(RecordingRefused):
            await start_recording(object(), consent_id="", master_key=MASTER,  # type: ignore[arg-type]
                                  workdir=tmp_path, uploader=store.upload)

    asyncio.run(direct())


def test_tampering_with_an_encrypted_recording_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording_format, "CHUNK", 64)
    source = tmp_path / "in.webm"
    source.write_bytes(bytes(range(256)) * 3)
    key = derive_key(MASTER, "rec-1")
    encrypt_file(source, tmp_path / "out.enc", key, {"recording_id": "rec-1"})
    sealed = (tmp_path / "out.enc").read_bytes()
    assert b"".join(decrypt(io.BytesIO(sealed), key)) == source.read_bytes()

    flipped = bytearray(sealed)
    flipped[-5] ^= 1
    with pytest.raises(InvalidTag):
        b"".join(decrypt(io.BytesIO(bytes(flipped)), key))
    with pytest.raises((InvalidTag, ValueError)):  # a dropped last chunk is caught, not silently shortened
        b"".join(decrypt(io.BytesIO(sealed[:-(64 + 16 + 4)]), key))
    with pytest.raises(InvalidTag):
        b"".join(decrypt(io.BytesIO(sealed), derive_key(MASTER, "rec-2")))


def test_a_recording_cut_by_a_killed_worker_is_salvaged_up_to_the_fault(tmp_path: Path) -> None:
    """The work files as a killed worker leaves them (a WebM without its end, the sidecar) are finished,
    encrypted and uploaded at the next start: playable up to about a second before the fault."""
    left = tmp_path / "left"
    result = call(tmp_path / "work", Store(), consent={"consent_id": "consent-7"}, seconds=4.0, snapshot=left)
    recording_id = result["started"][1]["recording_id"]
    assert json.loads((left / f"{recording_id}.json").read_text())["consent_id"] == "consent-7"

    store = Store()
    saved = asyncio.run(salvage(left, master_key=MASTER, uploader=store.upload))
    assert [r.recording_id for r in saved] == [recording_id]
    assert list(left.iterdir()) == []  # nothing left on the media host once uploaded
    _, ciphertext = store.objects[recording_id]
    header, _raw = read_header(io.BytesIO(ciphertext))
    assert header["ended_early"] is True and header["consent_id"] == "consent-7"
    assert 4.0 - 1.5 <= header["duration"] <= 4.0 + 0.5, header["duration"]
    plain = tmp_path / "played.webm"
    plain.write_bytes(b"".join(decrypt(io.BytesIO(ciphertext), derive_key(MASTER, recording_id))))
    with av.open(str(plain)) as container:
        video = [s.index for s in container.streams.video]
        assert len(video) == 2
        frames = list(container.decode(container.streams[video[0]]))
    assert len(frames) >= 0.6 * 30 * 4.0  # decodable, frame after frame, up to the cut


def test_salvage_leaves_a_recording_that_is_still_running_alone(tmp_path: Path) -> None:
    import fcntl

    (tmp_path / "abc.webm").write_bytes(b"partial")
    with (tmp_path / "abc.json").open("w") as live:
        fcntl.flock(live, fcntl.LOCK_EX)
        live.write(json.dumps({"recording_id": "abc", "consult_id": "c", "consent_id": "1", "participants": []}))
        live.flush()
        store = Store()
        assert asyncio.run(salvage(tmp_path, master_key=MASTER, uploader=store.upload)) == []
    assert store.objects == {} and (tmp_path / "abc.webm").exists()
