"""The DICOM listener (pynetdicom): C-ECHO, C-STORE, C-FIND (Patient/Study Root and Modality Worklist), C-MOVE
and C-GET, one module per service class beside this one.

Run with ``python -m app.imaging.scp`` (``hospital run`` starts it). Calling AE titles must be known peers
(:mod:`app.imaging.dimse.peers`, managed by admins; ``DICOM_ALLOWED_AETS`` seeds them), looked up for each
association, and each service needs its permission; the called AE title must be this listener's. A peer
belongs to a clinic: what it stores is filed there, and what it finds and retrieves is what that clinic's staff
see. Each association is audited, and so is every query and retrieval (by patient).
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.config import Config
from app.imaging.dimse import find, get, move, peers, store, worklist
from app.imaging.dimse.status import NOT_AUTHORIZED, SUCCESS, failure

logger = logging.getLogger(__name__)
QUERY_RETRIEVE = (PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelMove,
                  PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelFind,
                  StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet,
                  ModalityWorklistInformationFind)


DOING = {"store": "send scans", "query": "search", "retrieve": "retrieve", "worklist": "read the worklist"}


def _title(value: str | bytes) -> str:
    return (value if isinstance(value, str) else value.decode(errors="replace")).strip()


class Listener:
    """One pynetdicom AE serving every service class; the handlers run each service in an app context."""

    def __init__(self, app: Flask, *, peer_cache_seconds: float = peers.CACHE_SECONDS) -> None:
        self.app = app
        cfg = app.config
        self.peers = peers.Directory(peer_cache_seconds)
        self.ae = AE(ae_title=cfg["DICOM_AE_TITLE"])
        # Every transfer syntax for every storage class: scanners send JPEG, JPEG-LS, JPEG 2000, RLE or deflate,
        # and the object is stored as received (never decoded on the way in). Accepting a peer's proposal to be
        # the storage SCP (role selection) lets C-GET send instances back on the peer's own association.
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False)
        for sop_class in QUERY_RETRIEVE:
            self.ae.add_supported_context(sop_class)
        self.ae.add_supported_context(Verification)
        self.ae.require_called_aet = True
        self.ae.maximum_pdu_size = 0

    def handle_open(self, event: Any) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_requested(self, event: Any) -> None:
        """Accept an association only from an active known peer calling this listener's AE title; audit it."""
        rq = event.assoc.requestor.primitive
        calling, called = _title(rq.calling_ae_title), _title(rq.called_ae_title)
        address = getattr(event.assoc.requestor, "address", "?")
        with self.app.app_context():
            try:
                peer = self.peers.get(calling)
                ours = called == self.ae.ae_title.strip()
                audit.record("dicom.association", by=None, actor_name=f"DICOM AE {calling}",
                             outcome=Outcome.SUCCESS if peer is not None and ours else Outcome.DENIED,
                             resource_type="DicomPeer", resource_id=calling,
                             detail={"called_ae": called, "address": address})
                db.session.commit()
            finally:
                db.session.remove()
        # Rejected-permanent by the service user: calling AE title not recognised (3), called one not ours (7).
        if peer is None or not ours:
            logger.info("association from AE title %r at %s to %r refused", calling, address, called)
            event.assoc.acse.send_reject(0x01, 0x01, 0x03 if peer is None else 0x07)

    def _peer(self, event: Any, permission: str) -> tuple[peers.Peer | None, str, Dataset | None]:
        """The calling peer, its AE title, and a failure when it may not use this service (or was disabled)."""
        calling = _title(event.assoc.requestor.ae_title)
        peer = self.peers.get(calling)
        if peer is not None and peer.may(permission):
            return peer, calling, None
        return peer, calling, failure(NOT_AUTHORIZED, f"AE title {calling} may not {DOING[permission]} here")

    def handle_store(self, event: Any) -> Any:
        with self.app.app_context():
            try:
                peer, calling, refused = self._peer(event, "store")
                if refused is not None or peer is None:
                    return refused
                return store.respond(event, facility_id=peer.facility_id, calling=calling)
            finally:
                db.session.remove()

    def _service(self, event: Any, permission: str,
                 run: Callable[[peers.Peer, str], Iterator[Any]], refusal: tuple[Any, ...]) -> Iterator[Any]:
        """Run a generator service (C-FIND, C-MOVE, C-GET) in an app context, or answer its refusal."""
        with self.app.app_context():
            try:
                peer, calling, refused = self._peer(event, permission)
                if refused is not None or peer is None:
                    yield from (*refusal, (refused, None))
                    return
                yield from run(peer, calling)
            finally:
                db.session.remove()

    def handle_find(self, event: Any) -> Iterator[Any]:
        if event.request.AffectedSOPClassUID == ModalityWorklistInformationFind:
            return self._service(event, "worklist", lambda peer, calling: worklist.respond(
                event, facility_id=peer.facility_id, calling=calling), ())
        return self._service(event, "query", lambda peer, calling: find.respond(
            event, facility_id=peer.facility_id, calling=calling, retrieve_ae=self.ae.ae_title), ())

    def handle_move(self, event: Any) -> Iterator[Any]:
        """C-MOVE says even a refusal through its destination (see :func:`move.respond`)."""
        with self.app.app_context():
            try:
                peer, calling, refused = self._peer(event, "retrieve")
                yield from move.respond(event, facility_id=peer.facility_id if peer else None, calling=calling,
                                        peers=self.peers, refused=refused)
            finally:
                db.session.remove()

    def handle_get(self, event: Any) -> Iterator[Any]:
        return self._service(event, "retrieve", lambda peer, calling: get.respond(
            event, facility_id=peer.facility_id, calling=calling), (1,))

    def serve(self, host: str, port: int, *, block: bool = True) -> Any:
        with self.app.app_context():
            try:
                peers.seed(self.app.config["DICOM_ALLOWED_AETS"])
            finally:
                db.session.remove()
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda _e: SUCCESS),
                    (evt.EVT_C_FIND, self.handle_find), (evt.EVT_C_MOVE, self.handle_move),
                    (evt.EVT_C_GET, self.handle_get), (evt.EVT_REQUESTED, self.handle_requested),
                    (evt.EVT_CONN_OPEN, self.handle_open)]
        logger.info("DICOM listener %s on %s:%s", self.ae.ae_title, host, port)
        return self.ae.start_server((host, port), block=block, evt_handlers=handlers)


def main(argv: list[str] | None = None) -> None:
    from app import create_app

    parser = argparse.ArgumentParser(description="DICOM listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--allow", help="peers to add when missing, as AE=FACILITYCODE[@host:port],... "
                                        "(default: the config's DICOM_ALLOWED_AETS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = Config.from_env()
    if args.allow:
        cfg.DICOM_ALLOWED_AETS = args.allow
    app = create_app(cfg)
    Listener(app).serve(args.host or cfg.DICOM_HOST, args.port or cfg.DICOM_PORT)


if __name__ == "__main__":
    main()
