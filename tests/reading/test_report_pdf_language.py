"""The printable report in the reader's language: Chinese needs a CJK font, and without one it prints in English
(with a warning) rather than as empty boxes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from app.reading import outputs


def test_a_report_printed_in_chinese_uses_the_cjk_font(loop: Any) -> None:
    if not outputs.cjk_font_available():
        pytest.fail(f"{outputs.CJK_FONT} missing: install fonts-wqy-microhei (the CI script does)")
    req = loop.signed()
    assert b"WenQuanYi" in outputs.pdf_bytes(req.report, locale="zh_Hans")
    assert b"WenQuanYi" not in outputs.pdf_bytes(req.report, locale="en")


def test_without_the_cjk_font_a_chinese_report_prints_in_english(loop: Any, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    req = loop.signed()
    monkeypatch.setattr(outputs, "CJK_FONT", Path("/nonexistent/wqy-microhei.ttc"))
    with caplog.at_level(logging.WARNING, logger=outputs.__name__):
        pdf = outputs.pdf_bytes(req.report, locale="zh_Hans")
    assert pdf.startswith(b"%PDF") and b"WenQuanYi" not in pdf
    assert any("printed in English" in r.getMessage() for r in caplog.records)
