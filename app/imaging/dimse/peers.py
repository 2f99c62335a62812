"""Known DICOM peers: managed by admins in the browser, looked up by the listener for each association.

A peer is an AE title with its clinic, the services it may use (store, query, retrieve, worklist) and, for
C-MOVE, the host and port the platform sends to. ``DICOM_ALLOWED_AETS`` (``AE=FACILITYCODE`` or
``AE=FACILITYCODE@host:port``, comma separated) still works: the listener adds its entries as peers with every
permission when it starts, unless a peer with that title exists (an admin's edits are never overwritten).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import sqlalchemy as sa
from cachetools import TTLCache

from app import db
from app.audit import service as audit
from app.auth.models import Role, User
from app.errors import Forbidden, NotFound, ValidationFailed
from app.facilities.models import Facility
from app.imaging.models import DicomPeer

PERMISSIONS = ("store", "query", "retrieve", "worklist")
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire without backslash
HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,255}$")
CACHE_SECONDS = 5.0  # a change made in the browser reaches a running listener within this time


@dataclass(frozen=True)
class Peer:
    """What the listener needs of a peer, detached from any session."""

    ae_title: str
    facility_id: int
    host: str | None
    port: int | None
    permissions: frozenset[str]

    def may(self, permission: str) -> bool:
        return permission in self.permissions


def _permissions(row: DicomPeer) -> frozenset[str]:
    return frozenset(p for p in PERMISSIONS if getattr(row, f"can_{p}"))


def lookup(ae_title: str) -> Peer | None:
    """The active peer calling as ``ae_title``, or None."""
    row = db.session.scalar(sa.select(DicomPeer).where(DicomPeer.ae_title == ae_title.strip(), DicomPeer.active))
    if row is None:
        return None
    return Peer(row.ae_title, row.facility_id, row.host, row.port, _permissions(row))


#: AE titles remembered at once; unknown callers are cached too, so a scan of made-up titles stays bounded.
CACHE_ENTRIES = 1024
_MISS = object()


class Directory:
    """:func:`lookup` with a short, bounded cache, for the listener (one query per AE title every few seconds)."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._cache: TTLCache[str, Peer | None] = TTLCache(maxsize=CACHE_ENTRIES, ttl=ttl)
        self._lock = threading.Lock()

    def get(self, ae_title: str) -> Peer | None:
        """Call inside an app context."""
        with self._lock:
            hit = self._cache.get(ae_title, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        peer = lookup(ae_title)
        with self._lock:
            self._cache[ae_title] = peer
        return peer


def parse_allowed(text: str) -> dict[str, tuple[str, str | None, int | None]]:
    """``AE=CODE[@host:port],...`` as {AE: (facility code, host, port)}; malformed entries are skipped."""
    out: dict[str, tuple[str, str | None, int | None]] = {}
    for item in text.split(","):
        ae, _, rest = item.partition("=")
        code, _, address = rest.partition("@")
        host, _, port = address.rpartition(":")
        if ae.strip() and code.strip():
            out[ae.strip()] = (code.strip(), host.strip() or None, int(port) if port.strip().isdigit() else None)
    return out


def seed(text: str) -> None:
    """Add the peers of ``DICOM_ALLOWED_AETS`` that do not exist yet, with every permission; commits."""
    for ae, (code, host, port) in parse_allowed(text).items():
        facility_id = db.session.scalar(sa.select(Facility.id).where(Facility.code == code))
        exists = db.session.scalar(sa.select(DicomPeer.id).where(DicomPeer.ae_title == ae))
        if facility_id is None or exists is not None or not AE_TITLE.match(ae):
            continue
        db.session.add(DicomPeer(ae_title=ae, facility_id=facility_id, host=host, port=port,
                                 description="from DICOM_ALLOWED_AETS", can_store=True, can_query=True,
                                 can_retrieve=True, can_worklist=True, active=True))
        try:
            db.session.commit()
        except sa.exc.IntegrityError:  # another process added it at the same time
            db.rollback()


# ---------------------------------------------------------------- admin pages


def _admin(by: User, action: str) -> None:
    if by.role is not Role.ADMIN:
        audit.forbid(action, by=by, resource_type="DicomPeer")


def list_peers(*, by: User) -> list[DicomPeer]:
    _admin(by, "dicom.peer.list")
    return list(db.session.scalars(sa.select(DicomPeer).order_by(DicomPeer.ae_title)))


def get_peer(peer_id: int, *, by: User) -> DicomPeer:
    """:raises NotFound: no such peer."""
    _admin(by, "dicom.peer.read")
    if (peer := db.session.get(DicomPeer, peer_id)) is not None:
        return peer
    raise NotFound("No such DICOM peer.")


def save_peer(peer: DicomPeer | None, *, by: User, ae_title: str, host: str, port: int | None, facility_id: int,
              description: str, permissions: set[str], active: bool) -> DicomPeer:
    """Create (``peer`` None) or change a peer; the listener uses the change within :data:`CACHE_SECONDS`.

    :raises Forbidden: not an admin.
    :raises ValidationFailed: a field is wrong (names the field).
    """
    if by.role is not Role.ADMIN:
        audit.forbid("dicom.peer.create" if peer is None else "dicom.peer.update", by=by, resource_type="DicomPeer",
                     error=Forbidden("Only administrators manage DICOM peers."))
    ae_title, host = ae_title.strip(), host.strip()
    errors: dict[str, list[str]] = {}
    if not AE_TITLE.match(ae_title):
        errors["ae_title"] = ["An AE title is 1 to 16 letters, digits, spaces or symbols (no backslash)."]
    if host and not HOST.match(host):
        errors["host"] = ["Give a host name or an IP address."]
    if port is not None and not 0 < port < 65536:
        errors["port"] = ["A port is a number from 1 to 65535."]
    if bool(host) != (port is not None):
        errors.setdefault("port", []).append("Give both host and port (where retrieved scans are sent), or neither.")
    if db.session.get(Facility, facility_id) is None:
        errors["facility_id"] = ["Choose the clinic this peer belongs to."]
    same = db.session.scalar(sa.select(DicomPeer.id).where(DicomPeer.ae_title == ae_title))
    if same is not None and (peer is None or same != peer.id):
        errors["ae_title"] = ["Another peer already uses this AE title."]
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    created = peer is None
    if peer is None:
        peer = DicomPeer()
        db.session.add(peer)
    peer.ae_title, peer.host, peer.port, peer.facility_id = ae_title, host or None, port, facility_id
    peer.description, peer.active = description.strip()[:200] or None, active
    for p in PERMISSIONS:
        setattr(peer, f"can_{p}", p in permissions)
    db.session.flush()
    audit.record("dicom.peer.create" if created else "dicom.peer.update", by=by, resource_type="DicomPeer",
                 resource_id=peer.id, detail={"ae_title": ae_title, "facility_id": facility_id, "active": active,
                                              "permissions": sorted(permissions & set(PERMISSIONS))})
    return peer
