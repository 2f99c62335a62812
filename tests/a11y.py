"""axe-core (tests/npm) in a Chromium page: the WCAG 2.1 A/AA rules, critical and serious findings only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

AXE = Path(__file__).resolve().parent / "npm" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

RUN_AXE = """async (tags) => {
  const result = await axe.run(document, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] });
  return result.violations.filter((v) => v.impact === "critical" || v.impact === "serious").map((v) =>
    `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ") + " " +
      (n.failureSummary || "").split("\\n").slice(1, 2).join("")).join(" | ")}`);
}"""


def axe_violations(page: Any) -> list[str]:
    """Critical and serious WCAG 2.1 AA violations on the page as it is now. axe is evaluated through DevTools,
    so the page's CSP (no inline script, no eval) does not stop it."""
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: run `npm ci --prefix tests/npm` (make test does)")
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    return page.evaluate(RUN_AXE, WCAG_AA)
