"""Opaque object keys: random, sharded, with no patient data or UIDs in them."""

from __future__ import annotations

import secrets


def new_key(kind: str) -> str:
    """``<kind>/ab/cd/<32 hex>``: two shard levels keep directories small on the filesystem store."""
    token = secrets.token_hex(16)
    return f"{kind}/{token[:2]}/{token[2:4]}/{token}"


def is_valid(key: str) -> bool:
    parts = key.split("/")
    return bool(key) and all(p and p not in (".", "..") and p.replace("-", "").replace("_", "").isalnum()
                             for p in parts)
