"""The process boundary: the web app, playback of recordings included, never loads the media service's runtime
(aiortc, av, aiohttp), which only the separate media process needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
from app import create_app
from app.config import TestConfig

cfg = TestConfig()
cfg.DATABASE_URL = "sqlite://"
app = create_app(cfg)
with app.test_request_context("/"):
    from app.consults import api, media, recordings, views  # noqa: F401

    recordings.object_key("ab" * 12), recordings.master_key()  # what playback needs of the recording format
print(" ".join(sorted(m for m in ("aiortc", "av", "aiohttp") if m in sys.modules)))
"""


def test_the_web_app_does_not_load_the_media_runtime() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
