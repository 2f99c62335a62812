"""The recording format is shared by the media service (writes) and the app (plays): recordings stored before
the two derivations were unified must still open with the same keys and bytes."""

from __future__ import annotations

import io

import pytest

from app.consults import recordings
from media.server import recording_master_key
from storage import recording_format

RECORDING_ID = "0123456789abcdef01234567"
SECRET = "a" * 40
# Produced by the earlier code: media.recording.derive_key over the app's HMAC of SECRET_KEY, and encrypt_file
# with 16-byte chunks and nonce prefix 00..07.
MASTER = bytes.fromhex("f21d6fa468679d68ae31c08ea270641299482bb453dca2c7c7d216c551a46d77")
KEY = bytes.fromhex("d322e26f4168b491a7af62fa1d6053366c1e0129d7c08a8370f7154b93157765")
SEALED = bytes.fromhex(
    "5448524543310a0000005d7b226368756e6b223a2031362c20226e6f6e63655f707265666978223a202230303031303230333034"
    "303530363037222c20227265636f7264696e675f6964223a2022303132333435363738396162636465663031323334353637227d"
    "00000020ccc55bdb09d7e327e7061360d09988c5720308983e78e6e8bbef0a4e1c5f7bb600000020c35f531b1d2ba824260f6b11"
    "8034265fd7188bfac185abd3c7200030748774af0000001835217c2aaaf208bd6cad8409b7200fe74ee362478fbdbf61")


def test_existing_recordings_keep_their_keys_and_bytes() -> None:
    assert recording_format.master_key("", SECRET) == MASTER
    assert recording_format.derive_key(MASTER, RECORDING_ID) == KEY
    assert b"".join(recording_format.decrypt(io.BytesIO(SEALED), KEY)) == b"consult recording, forty bytes long!!!!!"
    assert recording_format.object_key(RECORDING_ID) == f"recordings/01/23/{RECORDING_ID}"


def test_app_and_media_service_derive_the_same_master_key(app, app_ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSPITAL_RECORDING_KEY", raising=False)
    monkeypatch.setitem(app.config, "RECORDING_KEY", "")
    assert recordings.master_key() == recording_master_key(str(app.config["SECRET_KEY"]))
    for configured in ("ab" * 32, "a passphrase of at least thirty-two characters"):
        monkeypatch.setenv("HOSPITAL_RECORDING_KEY", configured)
        monkeypatch.setitem(app.config, "RECORDING_KEY", configured)
        assert recordings.master_key() == recording_master_key() == recording_format.master_key(configured, "")
