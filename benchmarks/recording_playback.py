"""Recording playback figures (not part of the test suite): how fast the app streams a decrypted recording out
of the object store, how much memory that takes, and what one seek (a 64 KiB byte range) costs.

Uses a throw-away SQLite app and filesystem store; the encrypted file is made with the media service's own
``encrypt_file`` from random bytes (the cost does not depend on the content).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Run as a script, this folder comes first on sys.path, and its media.py would shadow the media package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import create_app  # noqa: E402
from app.config import TestConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200, help="recording size in MiB")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="recbench"))
    cfg = TestConfig()
    cfg.DATABASE_URL, cfg.INSTANCE_PATH, cfg.STORAGE_PATH = f"sqlite:///{tmp}/x.db", tmp, tmp / "objects"
    app = create_app(cfg)
    try:
        _measure(app, tmp, args.mib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(app: Any, tmp: Path, mib: int) -> None:
    with app.test_request_context("/"):
        from app.consults import recordings
        from app.imaging.service import object_store
        from storage.recording_format import derive_key, encrypt_file

        plain = tmp / "plain.webm"
        with plain.open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
        rid = "be" * 12
        key = derive_key(recordings.master_key(), rid)
        _digest, size = encrypt_file(plain, tmp / "enc", key, {"recording_id": rid})
        plain.unlink()
        with (tmp / "enc").open("rb") as fh:
            object_store().put(recordings.object_key(rid), fh)
        (tmp / "enc").unlink()
        row = SimpleNamespace(object_key=recordings.object_key(rid), size=size, recording_id=rid)

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        total = sum(len(chunk) for chunk in recordings.plaintext(row))
        elapsed = time.perf_counter() - start
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        print(f"stream {total / 2**20:.0f} MiB decrypted: {elapsed:.2f} s = {total / 2**20 / elapsed:.0f} MiB/s, "
              f"peak RSS growth {grew:.1f} MiB")
        layout = recordings.layout(row)
        start = time.perf_counter()
        for i in range(50):
            offset = (i * 3_999_999) % (layout.size - 65536)
            b"".join(recordings.plaintext_range(row, layout, offset, offset + 65536))
        print(f"64 KiB byte range (a seek): {1000 * (time.perf_counter() - start) / 50:.1f} ms each")


if __name__ == "__main__":
    main()
