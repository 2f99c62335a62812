"""The DICOM listener: C-ECHO and C-STORE SCP (pynetdicom) that clinic scanners push to.

Run with ``python -m app.imaging.scp`` (``hospital run`` starts it). Calling AE titles are allow-listed in
``DICOM_ALLOWED_AETS`` as ``AE=FACILITYCODE`` pairs, which also says which clinic the scans come from.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import threading
from typing import Any

import sqlalchemy as sa
from flask import Flask
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app import db
from app.config import Config
from app.facilities.models import Facility
from app.imaging.ingest import index_and_commit, stage_one
from app.imaging.service import IngestResult

logger = logging.getLogger(__name__)

STATUS_OK = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DUPLICATE = 0x0111


def parse_allowed(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        if item.strip():
            ae, _, code = item.partition("=")
            out[ae.strip()] = code.strip()
    return out


BATCH = 50  # instances per commit on one association


class _Batch:
    """Instances received on one association whose objects are stored and whose rows are not written yet."""

    def __init__(self, calling: str) -> None:
        self.calling = calling
        self.results: list[IngestResult] = []
        self.pending: dict[str, IngestResult] = {}
        self.lookup: sa.Connection | None = None  # kept open for the duplicate checks of the association

    def close(self) -> None:
        if self.lookup is not None:
            self.lookup.close()
            self.lookup = None


class Listener:
    """C-STORE SCP. Each instance's object is stored before its success status is answered; the rows of an
    association are written in batches (every :data:`BATCH` instances and at release/abort), one audit row per
    study and batch. If a batch cannot be written its objects are deleted (see ``index_and_commit``)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        cfg = app.config
        self.allowed = parse_allowed(cfg["DICOM_ALLOWED_AETS"])
        self.ae = AE(ae_title=cfg["DICOM_AE_TITLE"])
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.require_calling_aet = list(self.allowed) or ["-NOBODY-ALLOWED-"]
        self.ae.maximum_pdu_size = 0
        self._facility_ids: dict[str, int | None] = {}
        self._batches: dict[int, _Batch] = {}
        self._lock = threading.Lock()

    def facility_id(self, calling_ae: str) -> int | None:
        if calling_ae not in self._facility_ids:
            code = self.allowed.get(calling_ae) or ""
            self._facility_ids[calling_ae] = db.session.scalar(sa.select(Facility.id).where(Facility.code == code))
        return self._facility_ids[calling_ae]

    def handle_open(self, event: Any) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _batch(self, assoc: Any) -> _Batch:
        with self._lock:
            batch = self._batches.get(id(assoc))
            if batch is None:
                title = assoc.requestor.ae_title
                calling = (title if isinstance(title, str) else title.decode()).strip()
                batch = self._batches[id(assoc)] = _Batch(calling)
            return batch

    def handle_store(self, event: Any) -> int:
        batch = self._batch(event.assoc)
        with self.app.app_context():
            try:
                # The bytes as received (meta + dataset), never decoded; the header is parsed up to pixel data.
                data = event.encoded_dataset()
                if batch.lookup is None:
                    batch.lookup = self.app.extensions["db_engine"].connect()
                result = stage_one(io.BytesIO(data), filename=f"c-store from {batch.calling}", by=None,
                                   source="c-store", pending=batch.pending, size=len(data), lookup=batch.lookup)
                del data
                if result.staged is not None:
                    batch.results.append(result)
                    if len(batch.results) >= BATCH:
                        self._flush(batch)
            except Exception:
                logger.exception("C-STORE failed")
                return STATUS_OUT_OF_RESOURCES
            finally:
                db.session.remove()
        if result.ok:
            return STATUS_OK
        logger.info("C-STORE from %s rejected: %s", batch.calling, result.reason)
        return STATUS_DUPLICATE if result.status == "conflict" else STATUS_CANNOT_UNDERSTAND

    def _flush(self, batch: _Batch) -> None:
        results, batch.results, batch.pending = batch.results, [], {}
        if batch.lookup is not None:
            batch.lookup.rollback()  # a fresh snapshot for the next checks; nothing was written on it
        if not results:
            return
        index_and_commit(results, by=None, facility_id=self.facility_id(batch.calling),
                         actor_name=f"DICOM AE {batch.calling}")
        lost = [r for r in results if not r.ok]
        if lost:
            logger.error("C-STORE from %s: %d instances answered as stored could not be indexed and were "
                         "deleted; the sender must send them again", batch.calling, len(lost))

    def handle_end(self, event: Any) -> None:
        """Release requested (before it is answered), abort or closed connection: write what is left."""
        if event.event == evt.EVT_ACSE_RECV and not (isinstance(event.primitive, A_RELEASE)
                                                      and event.primitive.result is None):
            return
        with self._lock:
            batch = self._batches.pop(id(event.assoc), None)
        if batch is None:
            return
        with self.app.app_context():
            try:
                self._flush(batch)
            except Exception:
                logger.exception("C-STORE batch could not be written")
            finally:
                batch.close()
                db.session.remove()

    def serve(self, host: str, port: int, *, block: bool = True) -> Any:
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda _e: STATUS_OK),
                    (evt.EVT_CONN_OPEN, self.handle_open), (evt.EVT_ACSE_RECV, self.handle_end),
                    (evt.EVT_ABORTED, self.handle_end), (evt.EVT_CONN_CLOSE, self.handle_end)]
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
