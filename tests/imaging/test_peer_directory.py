"""The listener's directory of DICOM peers: one look-up per AE title while the cache holds, and a caller
inventing AE titles cannot grow it without bound."""

from __future__ import annotations

import pytest

from app.imaging.dimse import peers


def test_one_lookup_per_title_and_a_bounded_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(peers, "lookup", lambda title: asked.append(title))
    directory = peers.Directory(ttl=60)
    assert directory.get("CT1") is None and directory.get("CT1") is None
    assert asked == ["CT1"]
    for n in range(peers.CACHE_ENTRIES + 100):
        directory.get(f"MADEUP{n}")
    assert len(directory._cache) <= peers.CACHE_ENTRIES


def test_a_change_is_seen_once_the_entry_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([None, "peer"])
    monkeypatch.setattr(peers, "lookup", lambda title: next(answers))
    directory = peers.Directory(ttl=0)
    assert directory.get("CT1") is None
    assert directory.get("CT1") == "peer"
