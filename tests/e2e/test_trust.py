"""An explanation whose scores are at chance, in Debian's Chromium at 1280 px and 390 px (issue 29, item 2): the
feature page shows it small under a "scores at chance" badge, not as the feature's bold headline; search ranks it
below the feature whose label says the query, and its row shows the scores and the badge. Screenshots go to
tests/artifacts/trust_*.png."""

import re
import shutil

import pytest

from qscope.explain.scoring import Score
from qscope.explain.store import ExplanationWriter, explanations_path
from tests.helpers.browser import ARTIFACTS, chromium, sync_api
from tests.helpers.server import serving

pytestmark = pytest.mark.slow
WIDTHS = (1280, 390)
SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
CHANCE = 7


def query_word(db) -> str:
    """A word of letters that a label of SAE starts with (the tiny model's labels depend on its build, so the
    query is read from the store rather than written here)."""
    from qscope.store.queries import Store

    for label in Store(db).labels(SAE):
        word = re.sub(r"[^a-z]", "", label.split()[0].lower()) if label.split() else ""
        if len(word) >= 3:
            return word
    raise AssertionError("no label of letters in the tiny store")


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-trust")
    db = tmp / "tiny.duckdb"
    shutil.copy(tiny_db, db)
    word = query_word(db)
    gibberish = f"{word} {word} ow the ·of"
    w = ExplanationWriter(explanations_path(db))
    w.put_explanation(SAE, CHANCE, gibberish, "mini-explainer")
    w.put_scores(SAE, CHANCE, Score(0.5, 20, 0), Score(0.5, 10, 0), "mini-explainer")
    w.close()
    from qscope.store.queries import Store

    model_id = Store(db).model_ids[0]  # the demo folder's name: it differs between a session's build and a given one
    with serving(db, tmp_path_factory, OMP_NUM_THREADS="1") as base:
        yield base, word, gibberish, model_id


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


@pytest.mark.parametrize("width", WIDTHS)
def test_an_explanation_at_chance_is_marked_not_headlined(browser, server, width):
    server, word, GIBBERISH, model_id = server
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.set_default_timeout(90_000)
    page.goto(f"{server}/{model_id}/{SAE}/{CHANCE}")
    words = page.locator("#words")
    expect(words.locator(".badge.at-chance")).to_be_visible()
    expect(words.locator(".expl-text")).to_have_count(0)  # not the bold headline
    expect(words).to_contain_text(GIBBERISH)
    words.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"trust_feature_{width}.png"))

    page.goto(f"{server}/search?q={word}&kind=explanation&kind=text")
    rows = page.locator("table.results tbody tr")
    expect(rows.first.locator(".badge.text")).to_have_count(1)  # a label match comes first
    chance = rows.filter(has_text=GIBBERISH)
    expect(chance).to_contain_text(f"#{CHANCE}")
    expect(chance.locator(".badge.at-chance")).to_be_visible()
    expect(chance.locator(".score").first).to_have_text("det 0.50")
    kinds = rows.evaluate_all("rs => rs.map(r => [...r.querySelectorAll('.badge')].map(b => b.className).join(' '))")
    labels = [i for i, k in enumerate(kinds) if "text" in k.split()]
    at_chance = [i for i, k in enumerate(kinds) if "at-chance" in k.split()]
    assert labels and at_chance and max(labels) < min(at_chance), kinds  # below every label match
    page.screenshot(path=str(ARTIFACTS / f"trust_search_{width}.png"))
    page.close()
