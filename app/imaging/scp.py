"""The DICOM listener: C-ECHO and C-STORE SCP (pynetdicom) that clinic scanners push to.

Run with ``python -m app.imaging.scp`` (``hospital run`` starts it). Calling AE titles must be known peers
(:mod:`app.imaging.dimse.peers`, managed by admins; ``DICOM_ALLOWED_AETS`` seeds them), looked up for each
association, which also says which clinic the scans come from. Each association is audited.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
from typing import Any

from flask import Flask
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.config import Config
from app.imaging.dimse import peers
from app.imaging.ingest import index_and_commit, stage_one
from app.imaging.service import TRY_AGAIN

logger = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 B.2.3). Every failure carries an Error Comment saying why (at most 64 characters).
STATUS_OK = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CONFLICT = 0xC001  # Cxxx, "cannot understand": ours says the SOP Instance UID is taken by other content
STATUS_NOT_AUTHORIZED = 0x0124  # the peer may not use this service (PS3.7 C.1.4, "Refused: Not Authorized")


def _title(value: str | bytes) -> str:
    return (value if isinstance(value, str) else value.decode(errors="replace")).strip()


def _failure(status: int, comment: str) -> Any:
    """A C-STORE failure status with its Error Comment (0000,0902), which the sender logs."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


class Listener:
    """C-STORE SCP. Success is answered only once the instance's object is stored and its row committed; when
    either fails, or its outcome is unknown, the answer is a failure so that the sender sends it again."""

    def __init__(self, app: Flask, *, peer_cache_seconds: float = peers.CACHE_SECONDS) -> None:
        self.app = app
        cfg = app.config
        self.peers = peers.Directory(peer_cache_seconds)
        self.ae = AE(ae_title=cfg["DICOM_AE_TITLE"])
        # Every transfer syntax for every storage class: scanners send JPEG, JPEG-LS, JPEG 2000, RLE or deflate,
        # and the object is stored as received (never decoded on the way in).
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.ae.require_called_aet = True
        self.ae.maximum_pdu_size = 0

    def facility_id(self, calling_ae: str) -> int | None:
        peer = self.peers.get(calling_ae)
        return peer.facility_id if peer is not None else None

    def handle_requested(self, event: Any) -> None:
        """Accept an association only from an active known peer calling this listener's AE title; audit it."""
        rq = event.assoc.requestor.primitive
        calling = _title(rq.calling_ae_title)
        address = getattr(event.assoc.requestor, "address", "?")
        with self.app.app_context():
            try:
                peer = self.peers.get(calling)
                outcome = Outcome.SUCCESS if peer is not None else Outcome.DENIED
                audit.record("dicom.association", by=None, actor_name=f"DICOM AE {calling}", outcome=outcome,
                             resource_type="DicomPeer", resource_id=calling,
                             detail={"called_ae": _title(rq.called_ae_title), "address": address})
                db.session.commit()
            finally:
                db.session.remove()
        if peer is None:
            logger.info("association from unknown AE title %r at %s refused", calling, address)
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, service user, calling AE unknown

    def refuse(self, event: Any, permission: str) -> Dataset | None:
        """A failure status when the calling peer may not use this service (or was disabled since)."""
        calling = _title(event.assoc.requestor.ae_title)
        with self.app.app_context():
            try:
                peer = self.peers.get(calling)
            finally:
                db.session.remove()
        if peer is not None and peer.may(permission):
            return None
        return _failure(STATUS_NOT_AUTHORIZED, f"AE title {calling} may not {permission} here")

    def handle_open(self, event: Any) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_store(self, event: Any) -> Any:
        calling = _title(event.assoc.requestor.ae_title)
        refused = self.refuse(event, "store")
        if refused is not None:
            return refused
        with self.app.app_context():
            try:
                # The bytes as received (meta + dataset), never decoded; the header is parsed up to pixel data.
                data = event.encoded_dataset()
                result = stage_one(io.BytesIO(data), filename=f"c-store from {calling}", by=None,
                                   source="c-store", size=len(data))
                del data
                index_and_commit([result], by=None, facility_id=self.facility_id(calling),
                                 actor_name=f"DICOM AE {calling}")
            except Exception:
                logger.exception("C-STORE from %s failed", calling)
                return _failure(STATUS_OUT_OF_RESOURCES, TRY_AGAIN)
            finally:
                db.session.remove()
        if result.ok:
            return STATUS_OK
        logger.info("C-STORE from %s rejected: %s", calling, result.reason)
        if result.status == "conflict":
            return _failure(STATUS_CONFLICT, result.reason)
        if result.transient:
            return _failure(STATUS_OUT_OF_RESOURCES, result.reason)
        return _failure(STATUS_CANNOT_UNDERSTAND, result.reason)

    def serve(self, host: str, port: int, *, block: bool = True) -> Any:
        with self.app.app_context():
            try:
                peers.seed(self.app.config["DICOM_ALLOWED_AETS"])
            finally:
                db.session.remove()
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda _e: STATUS_OK),
                    (evt.EVT_REQUESTED, self.handle_requested),
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
