"""Explanations, notes and lists in a real browser (Debian's Chromium) on `qscope serve`: a feature's automatic
explanation and scores shown as text, a person's own explanation written with the page's form, a list made from
the feature page and reopened by its link, and search finding the feature by its explanation first; a list kept by
the browser that made it (its owner secret in localStorage), added to and deleted by it alone, at 390 px too."""

import json
import shutil
import urllib.error
import urllib.request

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
    page.wait_for_url("**/40#words*")
    page.wait_for_function("!location.hash.includes('keep=')")  # the owner secret left the address bar ...
    assert page.url.endswith("/40#words")
    kept = json.loads(page.evaluate("localStorage.getItem('qscope.owned')"))
    assert [k.split(":")[0] for k in kept] == ["note"]  # ... into the browser's storage
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


MEASURE = "() => [window.innerWidth, Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)]"


def test_a_list_is_kept_by_its_browser_and_deleted_with_its_secret(page, server):  # noqa: F811
    expect = sync_api.expect
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(server + "/lists")
    page.fill("input[name=name]", "Mine for a while")
    page.locator("button", has_text="Make the list").click()
    page.wait_for_url("**/lists/*")
    page.wait_for_function("!location.hash.includes('keep=')")
    list_url = page.url
    assert "#" not in list_url
    page.reload()  # the secret is in localStorage, not in the page: the owner's actions show after a reload
    delete = page.locator("button", has_text="Delete list")
    expect(delete).to_be_visible()
    page.fill("input[name=feature]", "40")
    page.locator("button", has_text="Add").click()
    page.wait_for_url(list_url)
    expect(page.locator("table.grid tbody tr")).to_contain_text("#40")
    width, scroll = page.evaluate(MEASURE)
    assert scroll <= width, f"the list page is {scroll} px wide at {width} px"
    shot(page, "explain_04_owned_list_390")

    feature = page.locator("table.grid a.flink").first.get_attribute("href")
    page.goto(server + feature.replace("/40", "/41"))  # a feature page offers the lists this browser made
    page.locator("summary", has_text="Add to a list").click()
    expect(page.locator("select[data-owned-lists] option", has_text="Mine for a while")).to_have_count(1)

    other = page.context.browser.new_context(viewport={"width": 390, "height": 800})
    stranger = other.new_page()
    stranger.goto(list_url)  # another browser holds no secret: no owner action, and a line saying why
    expect(stranger.locator("button", has_text="Delete list")).to_be_hidden()
    expect(stranger.locator("h2", has_text="Add a feature")).to_be_hidden()
    expect(stranger.locator("text=Only the browser that made this list")).to_be_visible()
    other.close()

    page.goto(list_url)
    page.once("dialog", lambda d: d.accept())
    page.locator("button", has_text="Delete list").click()
    page.wait_for_url(server + "/lists")
    expect(page.locator("a", has_text="Mine for a while")).to_have_count(0)
    assert "Mine for a while" not in page.evaluate("localStorage.getItem('qscope.owned')")
    try:
        urllib.request.urlopen(list_url)
        raise AssertionError("the deleted list still answers")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    page.set_viewport_size({"width": 1360, "height": 900})
    assert page.problems == []
