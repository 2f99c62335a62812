"""The DICOM listener: C-ECHO and C-STORE SCP (pynetdicom) that clinic scanners push to.

Run with ``python -m app.imaging.scp`` (``hospital run`` starts it). Calling AE titles are allow-listed in
``DICOM_ALLOWED_AETS`` as ``AE=FACILITYCODE`` pairs, which also says which clinic the scans come from.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
from typing import Any

import sqlalchemy as sa
from flask import Flask
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app import db
from app.config import Config
from app.facilities.models import Facility
from app.imaging.ingest import index_and_commit, stage_one
from app.imaging.service import TRY_AGAIN

logger = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 B.2.3). Every failure carries an Error Comment saying why (at most 64 characters).
STATUS_OK = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CONFLICT = 0xC001  # Cxxx, "cannot understand": ours says the SOP Instance UID is taken by other content


def _failure(status: int, comment: str) -> Any:
    """A C-STORE failure status with its Error Comment (0000,0902), which the sender logs."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def parse_allowed(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        if item.strip():
            ae, _, code = item.partition("=")
            out[ae.strip()] = code.strip()
    return out


class Listener:
    """C-STORE SCP. Success is answered only once the instance's object is stored and its row committed; when
    either fails, or its outcome is unknown, the answer is a failure so that the sender sends it again."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        cfg = app.config
        self.allowed = parse_allowed(cfg["DICOM_ALLOWED_AETS"])
        self.ae = AE(ae_title=cfg["DICOM_AE_TITLE"])
        # Every transfer syntax for every storage class: scanners send JPEG, JPEG-LS, JPEG 2000, RLE or deflate,
        # and the object is stored as received (never decoded on the way in).
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.ae.require_calling_aet = list(self.allowed) or ["-NOBODY-ALLOWED-"]
        self.ae.maximum_pdu_size = 0
        self._facility_ids: dict[str, int | None] = {}

    def facility_id(self, calling_ae: str) -> int | None:
        if calling_ae not in self._facility_ids:
            code = self.allowed.get(calling_ae) or ""
            self._facility_ids[calling_ae] = db.session.scalar(sa.select(Facility.id).where(Facility.code == code))
        return self._facility_ids[calling_ae]

    def handle_open(self, event: Any) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_store(self, event: Any) -> Any:
        title = event.assoc.requestor.ae_title
        calling = (title if isinstance(title, str) else title.decode()).strip()
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
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda _e: STATUS_OK),
                    (evt.EVT_CONN_OPEN, self.handle_open)]
        logger.info("DICOM listener %s on %s:%s", self.ae.ae_title, host, port)
        return self.ae.start_server((host, port), block=block, evt_handlers=handlers)


def main(argv: list[str] | None = None) -> None:
    from app import create_app

    parser = argparse.ArgumentParser(description="DICOM C-STORE/C-ECHO listener")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--allow", help="calling AE titles allowed, as AE=FACILITYCODE,... (default: the config's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cfg = Config.from_env()
    if args.allow:
        cfg.DICOM_ALLOWED_AETS = args.allow
    app = create_app(cfg)
    Listener(app).serve(args.host or cfg.DICOM_HOST, args.port or cfg.DICOM_PORT)


if __name__ == "__main__":
    main()
