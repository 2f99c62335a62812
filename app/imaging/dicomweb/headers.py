"""Headers of stored instances, read from object storage and parsed once per object (search and retrieve both
need them: ``includefield``, metadata, frames, rendered images)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import pydicom

from app.imaging import service
from app.imaging.models import Instance


class Lru:
    """A small thread-safe LRU bounded by total byte cost; keys include the object's sha256, so a
    re-stored object with different content never hits a stale entry."""

    def __init__(self, max_cost: int) -> None:
        self.max_cost, self.cost = max_cost, 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any, cost: int) -> None:
        if cost > self.max_cost:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.cost -= old[1]
            self._items[key] = (value, cost)
            self.cost += cost
            while self.cost > self.max_cost:
                _, (_, c) = self._items.popitem(last=False)
                self.cost -= c

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.cost = 0


HEADER_CACHE = Lru(2048)  # parsed headers, per process; cost = 1 per header


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
            HEADER_CACHE.put(key, ds, 1)
    return ds


def full_dataset(inst: Instance) -> pydicom.Dataset:
    """The whole stored object, pixel data included."""
    data = service.object_store().read(inst.object_key)
    return pydicom.dcmread(io.BytesIO(data), force=True)
