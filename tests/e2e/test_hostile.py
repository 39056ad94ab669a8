"""Hostile corpus text, end to end: documents holding `<script>`, attribute-breaking `"><img onerror=...>`, SVG
handlers, `javascript:` URLs and control characters are harvested by the real harvest, served by `qscope serve`
and browsed in Debian's headless Chromium (feature pages, search, inspect, steer). No dialog may fire, no CSP
violation or script error may be logged, the DOM may hold no script or handler the app did not write, and the
hostile strings must show as text."""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.browser import ARTIFACTS, CHROMIUM, chromium
from tests.helpers.harvests import demo_harvest_args
from tests.helpers.server import qscope_cmd, serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e .[dev])")

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
SVG = "'><svg/onload=alert(3)>"
HOSTILE = [SCRIPT, IMG, SVG, "javascript:alert(4)", "bell\x07 nul\x00 esc\x1b[31m del\x7f rtl\u202eevil\u202c"]
FOREIGN = "document.querySelectorAll('script:not([src]):not([type=\"application/json\"]), [onerror], [onload], img, svg:not(.plot), iframe').length"  # noqa: E501


@pytest.fixture(scope="module")
def hostile_db(tiny_demo, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    corpus = tmp / "hostile.jsonl"
    with open(corpus, "w") as f:
        for i in range(240):
            text = f"Item {i}: {HOSTILE[i % len(HOSTILE)]} then {HOSTILE[(i + 1) % len(HOSTILE)]} and plain words."
            f.write(json.dumps({"text": text}) + "\n")
    out = tmp / "hostile.duckdb"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "QSCOPE_DEVICE": "cpu"}
    r = subprocess.run(
        [
            *qscope_cmd(),
            *demo_harvest_args(tiny_demo, out, corpus),
            "--tokens",
            "4096",
            "--ctx",
            "64",
            "--checkpoint-every",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def server(hostile_db, tmp_path_factory):
    with serving(hostile_db, tmp_path_factory, QSCOPE_APP_DB_URL="sqlite://") as base:
        yield base


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": 1360, "height": 900})
        pg.set_default_timeout(90_000)
        pg.dialogs, pg.problems = [], []
        pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
        pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
        pg.on(
            "console",
            lambda m: pg.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        pg.on("response", lambda r: pg.problems.append(f"{r.status} {r.url}") if r.status >= 500 else None)
        yield pg


def context_text(page) -> str:
    """What a reader sees in the contexts, hidden tokens included, with the visible-space glyph as a space."""
    return " ".join(page.locator(".ctx .toks").all_text_contents()).replace("·", " ")


def assert_clean(page) -> None:
    assert page.evaluate(FOREIGN) == 0, page.url
    assert page.dialogs == [] and page.problems == [], (page.dialogs, page.problems)


def test_hostile_contexts_show_as_text(page, server):
    expect = sync_api.expect
    page.goto(server + "/")
    page.locator("table.grid a").first.click()
    page.select_option("select[name=sort]", "density")
    page.wait_for_url("**sort=density**")
    seen = ""
    for i in range(3):
        page.locator("table.features tbody tr td.label a").nth(i).click()
        expect(page.locator("h2", has_text="Top activations")).to_be_visible()
        seen += context_text(page)
        assert_clean(page)
        page.go_back()
    assert SCRIPT in seen and IMG in seen and SVG in seen
    assert "<0x07>" in seen and "<0x1B>" in seen  # control characters drawn as their bytes (qscope.tokens)
    page.locator("table.features tbody tr td.label a").first.click()
    page.locator(".ctx").first.click()  # expanded: the far tokens become visible too
    page.screenshot(path=str(ARTIFACTS / "hostile_feature.png"))
    assert_clean(page)


def test_hostile_queries_search_inspect_and_steer(page, server):
    expect = sync_api.expect
    page.fill("form.quick input[name=q]", SCRIPT + IMG)
    page.press("form.quick input[name=q]", "Enter")
    page.wait_for_url("**/search?q=**")
    expect(page.locator("form.searchform input[name=q]")).to_have_value(SCRIPT + IMG)
    assert_clean(page)
    page.goto(server + "/inspect")
    text = f"A {SCRIPT} B {IMG} C {SVG} D bell\x07"
    page.fill("textarea[name=text]", text)
    page.locator("button", has_text="Run").click()
    expect(page.locator(".strip .tok").first).to_be_visible()
    strip = "".join(page.locator(".strip .tok").all_text_contents()).replace("·", " ")
    assert SCRIPT in strip and IMG in strip and "<0x07>" in strip
    page.screenshot(path=str(ARTIFACTS / "hostile_inspect.png"))
    assert_clean(page)
    page.goto(server + "/steer")
    page.fill("textarea[name=prompt]", IMG + SCRIPT)
    page.fill("input[name=max_new_tokens]", "6")
    page.locator("#run").click()
    expect(page.locator("#status")).to_have_text("done")
    assert len(page.locator("#out-steered .st").all()) == 6
    assert_clean(page)
    page.goto(server + "/search?q=" + urllib.request.quote(SVG + SCRIPT))  # reflected straight from the URL
    assert page.locator("form.searchform input[name=q]").input_value() == SVG + SCRIPT
    assert SVG + SCRIPT in page.title()
    assert_clean(page)
