"""Headers of stored instances, read from object storage and parsed once per object (search and retrieve both
need them: ``includefield``, metadata, frames, rendered images)."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Hashable
from typing import Any

import cachetools
import pydicom

from app.imaging import service
from app.imaging.models import Instance


class Lru:
    """cachetools' LRU cache shared by a process's request threads (behind a lock), bounded by total cost
    (``cost(value)``: 1 per entry unless given); keys include the object's sha256, so a re-stored object with
    different content never hits a stale entry. A value costlier than the whole bound is not kept."""

    def __init__(self, max_cost: int, cost: Callable[[Any], int] | None = None) -> None:
        self._items: cachetools.LRUCache[Hashable, Any] = cachetools.LRUCache(max_cost, getsizeof=cost)
        self._lock = threading.Lock()

    @property
    def cost(self) -> float:
        return self._items.currsize

    def get(self, key: Hashable) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock, contextlib.suppress(ValueError):  # too large to keep
            self._items[key] = value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


HEADER_CACHE = Lru(2048)  # parsed headers, per process


def header_of(inst: Instance) -> pydicom.Dataset:
    """A fresh parse of the header (everything before Pixel Data); the caller may change it."""
    if inst.pixel_data_offset:
        data = service.object_store().read(inst.object_key, length=inst.pixel_data_offset)
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return full_dataset(inst)


def shared_header(inst: Instance) -> pydicom.Dataset:
    """The header parsed once per object and shared; callers must not modify it."""
    key = (inst.object_key, inst.sha256)
    ds = HEADER_CACHE.get(key)
    if ds is None:
        ds = header_of(inst)
        if inst.pixel_data_offset:
            HEADER_CACHE.put(key, ds)
    return ds


def full_dataset(inst: Instance) -> pydicom.Dataset:
    """The whole stored object, pixel data included."""
    data = service.object_store().read(inst.object_key)
    return pydicom.dcmread(io.BytesIO(data), force=True)
