"""Explanations, notes and lists in a real browser (Debian's Chromium) on `qscope serve`: a feature's automatic
explanation and scores shown as text, a person's own explanation written with the page's form, a list made from
the feature page and reopened by its link, and search finding the feature by its explanation first."""

import shutil

import pytest

from qscope.explain.scoring import Score
from qscope.explain.store import ExplanationWriter, explanations_path
from tests.helpers.browser import shot, sync_api
from tests.helpers.server import serving

pytestmark = pytest.mark.slow

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
AUTO = "<b>closing</b> brackets after a call"


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    """qscope serve on a copy of the tiny store with one automatic explanation, and its own app database."""
    tmp = tmp_path_factory.mktemp("e2e-explain")
    db = tmp / "tiny.duckdb"
    shutil.copy(tiny_db, db)
    w = ExplanationWriter(explanations_path(db))
    w.put_explanation(SAE, 40, AUTO, "mini-explainer")
    w.put_scores(SAE, 40, Score(0.9, 20, 0), Score(0.7, 10, 1), "mini-explainer")
    w.close()
    env = {"QSCOPE_APP_DB_URL": f"sqlite:///{tmp}/app.db", "OMP_NUM_THREADS": "1"}
    with serving(db, tmp_path_factory, **env) as base:
        yield base


def test_explanation_note_list_and_search(page, server):  # noqa: F811
    expect = sync_api.expect
    page.goto(server + "/")
    page.locator("table.grid a", has_text=SAE).first.click()
    sae_url = page.url.split("?")[0]
    expect(page.locator("td.explcell", has_text=AUTO)).to_have_count(1)  # in the SAE's list, as text
    page.goto(sae_url + "/40")
    expect(page.locator(".words .expl-text")).to_have_text(AUTO)  # markup shown as text
    expect(page.locator(".words .score.good")).to_have_text("detection 0.90")
    expect(page.locator(".words .score.fair")).to_have_text("fuzzing 0.70")
    shot(page, "explain_01_feature")

    page.locator("summary", has_text="Write your own explanation or note").click()
    page.select_option("select[name=kind]", "explanation")
    page.fill("textarea[name=text]", "closing parentheses <i>in calls</i>")
    page.fill("input[name=author]", "Ada")
    page.locator("button", has_text="Save").click()
    page.wait_for_url("**/40#words")
    note = page.locator(".pnote")
    expect(note).to_have_count(1)
    expect(note.locator(".ptext")).to_have_text("closing parentheses <i>in calls</i>")
    expect(note).to_contain_text("Ada")

    page.locator("summary", has_text="Add to a list").click()
    page.fill("input[name=name]", "Brackets & friends")
    page.locator("input[name=note]").last.fill("the clearest one")
    page.locator("button", has_text="Make the list").click()
    page.wait_for_url("**/lists/*")
    list_url = page.url
    expect(page.locator("h1")).to_have_text("Brackets & friends")
    row = page.locator("table.grid tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("#40")
    expect(row).to_contain_text(AUTO)
    expect(row).to_contain_text("the clearest one")
    shot(page, "explain_02_list")
    page.goto(server + "/")
    page.goto(list_url)  # the permalink reopens the list
    expect(page.locator("h1")).to_have_text("Brackets & friends")
    page.goto(sae_url + "/40")
    expect(page.locator(".inlists a", has_text="Brackets & friends")).to_have_count(1)

    page.fill("form.quick input[name=q]", "closing")
    page.press("form.quick input[name=q]", "Enter")
    page.wait_for_url("**/search?q=closing")
    first = page.locator("table.results tbody tr").first
    expect(first.locator(".badge.explanation")).to_have_count(1)
    expect(first).to_contain_text("#40")
    expect(first.locator(".expl")).to_have_text(AUTO)
    expect(page.locator(".found-words")).to_contain_text("closing parentheses <i>in calls</i>")
    shot(page, "explain_03_search")
    assert page.problems == []
