"""The explorer as a newcomer meets it, in Debian's Chromium: every kind of page at 1280 px and at 390 px (a
phone) is no wider than the window and shows no U+FFFD; /inspect and /steer show their errors on the page, in
words, next to what caused them; the steering picker, dead features and Share behave as they say.

One server serves the tiny default (a real model: inspect, search by firing, steering) and the hand-made store
of tests/helpers/stores.py (split characters, very long tokens, a dead feature). Screenshots go to
tests/artifacts/newcomer_*.png."""

import json
import urllib.parse
import urllib.request

import pytest

from tests.helpers.browser import ARTIFACTS, chromium, sync_api
from tests.helpers.server import serving
from tests.helpers.stores import DEAD, MODEL_ID, SAE_IDS, write_newcomer_store

pytestmark = pytest.mark.slow
WIDTHS = (1280, 390)
FUN = "I ❤️ emoji 😀 and 日本語"
WIDE_SAE = SAE_IDS[0]
MEASURE = """() => ({
  width: window.innerWidth,
  scroll: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
  text: document.title + "\\n" + document.body.innerText,
})"""


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    wide = write_newcomer_store(tmp_path_factory.mktemp("wide") / "wide.duckdb")
    with serving([tiny_db, wide], tmp_path_factory) as base:
        yield base


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def _pages(server: str) -> list[str]:
    """One URL of every kind of page, for both models: lists, dashboards, embeds, search, inspect (both modes,
    with results), why this token, steering (new and a saved run), and the error pages."""
    with urllib.request.urlopen(server + "/.json") as r:
        models = json.loads(r.read())["models"]
    tiny = next(m for m in models if m["model_id"] != MODEL_ID)
    model_id, sae_id = tiny["model_id"], tiny["saes"][-1]["sae"]["sae_id"]
    run = _post(server + "/api/steer", {"prompt": FUN, "max_new_tokens": 6, "temperature": 0})
    saved = _post(server + "/api/steer/share", {"run": run["run"]})["url"]
    q = urllib.parse.quote
    return [
        "/",
        f"/{model_id}/{sae_id}",
        f"/{model_id}/{sae_id}/3",
        f"/{model_id}/{sae_id}/3?embed=1",
        f"/{MODEL_ID}/{WIDE_SAE}",
        f"/{MODEL_ID}/{WIDE_SAE}/0",
        f"/{MODEL_ID}/{WIDE_SAE}/{DEAD}",
        f"/{MODEL_ID}/{WIDE_SAE}/0?embed=1",
        "/search?q=" + q("日本語 the"),
        "/inspect?text=" + q(FUN),
        "/attribute?pos=4&text=" + q(FUN),
        "/inspect?mode=compare&a=" + q("import os\n---\n" + FUN) + "&b=" + q("The cat sat on the mat."),
        f"/steer?sae_id={sae_id}&feature=3",
        f"/steer?sae_id={WIDE_SAE}&feature=0",
        saved,
        "/nope/nothing",
        "/inspect?text=" + "x" * 4001,
    ]


def test_every_page_fits_the_window_and_shows_no_replacement_character(browser, server):
    paths = _pages(server)
    problems = []
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(120_000)
        for i, path in enumerate(paths):
            page.goto(server + path)
            if path.startswith("/steer?"):  # the rows' labels arrive from the server
                page.wait_for_selector("#features .flabel a")
            got = page.evaluate(MEASURE)
            if got["scroll"] > got["width"]:
                problems.append(f"{width}px {path[:80]}: {got['scroll']} px wide")
            if "\ufffd" in got["text"]:
                problems.append(f"{width}px {path[:80]}: shows U+FFFD")
            page.screenshot(path=str(ARTIFACTS / f"newcomer_{width}_{i:02d}.png"), full_page=True)
        page.close()
    assert problems == []
    assert len(paths) >= 17


def test_inspect_shows_its_422_next_to_the_form(browser, server):
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server + "/inspect")
    page.fill("textarea[name=text]", "y" * 4001)
    expect(page.locator(".charcount")).to_contain_text("4,001 / 4,000 characters: too long")
    page.locator("button", has_text="Run").click()
    box = page.locator("#result .errbox")
    expect(box).to_be_visible()
    expect(box).to_contain_text("4,001 characters long; this server runs at most 4,000")
    page.fill("textarea[name=text]", FUN)  # and a good text replaces the error with the result
    page.locator("button", has_text="Run").click()
    expect(page.locator(".strip .tok").first).to_be_visible()
    assert "😀" in page.locator(".strip").inner_text() and "日本語" in page.locator(".strip").inner_text()
    page.screenshot(path=str(ARTIFACTS / "newcomer_inspect_422.png"))
    page.close()


def test_steer_errors_picker_dead_features_and_share(browser, server):
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(server + "/steer")
    share = page.locator("#share")
    expect(share).to_be_disabled()
    assert "Run first" in share.get_attribute("title")

    page.locator("#run").click()  # no prompt: said beside the prompt, in words
    expect(page.locator("#prompt + .fielderr")).to_contain_text("The prompt is empty")
    expect(page.locator("#steer-error")).to_be_visible()

    page.fill("#prompt", "The cat sat on the")
    page.fill("#fsearch", "the")  # the picker: results are buttons that add the feature with its label
    pick = page.locator("button.pick").first
    expect(pick).to_be_visible()
    pick.click()
    row = page.locator(".feature-row").first
    expect(row.locator(".flabel a")).to_be_visible()
    row.locator("[name=strength]").fill("500")
    page.locator("#run").click()  # over the limit: the server's 422, shown in that row
    expect(row.locator(".fielderr")).to_contain_text("outside ±200")
    expect(page.locator("#steer-error")).to_contain_text("Not run")

    row.locator("[name=strength]").fill("4")
    page.fill("input[name=max_new_tokens]", "4")
    page.locator("#run").click()
    expect(page.locator("#status")).to_have_text("done")
    expect(page.locator("#steer-error")).to_be_hidden()
    expect(share).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS / "newcomer_steer_done.png"), full_page=True)

    page.goto(f"{server}/steer?sae_id={WIDE_SAE}&feature={DEAD}")  # a dead feature: add and clamp not offered
    dead = page.locator(".feature-row").first
    expect(dead.locator(".fnote")).to_contain_text("never fired")
    assert dead.locator("[name=mode]").input_value() == "multiply"
    assert dead.locator("option[value=add]").is_disabled() and dead.locator("option[value=clamp]").is_disabled()
    page.screenshot(path=str(ARTIFACTS / "newcomer_steer_dead.png"), full_page=True)
    page.close()


def test_steering_is_in_the_navigation_and_the_header_search_keeps_its_query(browser, server):
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(server + "/")
    page.locator("header.top nav a", has_text="Steer").click()
    page.wait_for_url("**/steer")
    page.fill("form.quick input[name=q]", "日本語")
    page.press("form.quick input[name=q]", "Enter")
    page.wait_for_url("**/search?q=**")
    assert page.locator("form.quick input[name=q]").input_value() == "日本語"
    page.close()
