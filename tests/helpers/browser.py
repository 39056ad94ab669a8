"""A real browser for the end-to-end tests: Debian's Chromium driven by Playwright (it never downloads a
browser). Screenshots go to tests/artifacts/ (gitignored)."""

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e .[dev])")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
