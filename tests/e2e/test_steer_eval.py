"""Steering evaluations in a real browser (Debian's Chromium) against `qscope serve` on the tiny default: from a
feature's page to the form, start, progress streamed, the plots, the recipe link; and a server stopped mid-run
leaves its job failed, with no result, for the next server on the same app database."""

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers.browser import chromium, shot, sync_api, watch_problems
from tests.helpers.server import serving

pytestmark = pytest.mark.slow

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
PROMPTS = "\n".join(
    [
        "The cat sat on the",
        "Once upon a time",
        "The weather today is",
        "She opened the door and",
        "In the morning we",
        "The best way to",
    ]
)


@pytest.fixture(scope="module")
def app_db(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('appdb') / 'app.db'}"


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory, app_db):
    with serving(tiny_db, tmp_path_factory, QSCOPE_APP_DB_URL=app_db) as base:
        yield base


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": 1360, "height": 900})
        pg.set_default_timeout(120_000)
        watch_problems(pg)
        yield pg


def test_from_a_feature_page_to_a_verdict_and_a_recipe(page, server):
    expect = sync_api.expect
    page.goto(server + "/")
    page.locator("table.grid a", has_text=SAE).first.click()
    page.goto(page.url.split("?")[0] + "/40")
    page.locator("a", has_text="Evaluate this steer").click()
    page.wait_for_url("**/steer-eval?**feature=40**")
    row = page.locator("#features .frow")
    expect(row).to_have_count(1)
    assert row.locator("[name=feature]").input_value() == "40"

    page.check("input[name=source][value=text]")
    page.fill("textarea[name=prompts_text]", PROMPTS)
    page.fill("input[name=strengths]", "0, 2, 8")
    page.fill("input[name=seeds]", "2")
    page.fill("input[name=random_controls]", "2")
    page.fill("input[name=max_new_tokens]", "16")
    page.fill("textarea[name=diffmean_with]", "def f(x): return x + 1\nimport os, sys\nfor i in range(3): print(i)")
    page.fill("textarea[name=diffmean_without]", "The sun was warm.\nWe walked home.\nShe read a book.")
    page.locator("#start").click()
    page.wait_for_url("**/steer-eval/*")
    expect(page.locator("#progress-text")).to_contain_text("rows", timeout=60_000)  # a progress event arrived
    shot(page, "11_steer_eval_progress")
    expect(page.locator("svg.plot.sweep")).to_have_count(2, timeout=180_000)  # done: the page shows the result
    expect(page.locator("#verdict")).to_be_visible()
    assert page.locator("table.sweep-table tbody tr").count() == 1 + 3 + 2 + 2 + 2  # ..., random, diffmean
    expect(page.locator("#comparison")).to_contain_text("DiffMean")  # the arms compared, DiffMean among them
    shot(page, "12_steer_eval_result")

    page.locator("#recipe-link").click()
    page.wait_for_url("**/recipes/*")
    expect(page.locator("h1")).to_contain_text("Recipe")
    expect(page.locator("svg.plot.sweep")).to_have_count(2)
    recipe = json.loads(urllib.request.urlopen(page.url + ".json").read())
    assert page.locator("#verdict").inner_text() == recipe["verdict"]["status"]
    shot(page, "13_recipe")
    page.goto(server + "/recipes")
    expect(page.locator("table.recipes tbody tr")).to_have_count(1)
    assert page.problems == []


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())


def get(base: str, path: str) -> dict:
    return json.loads(urllib.request.urlopen(base + path).read())


def test_server_stopped_mid_run_leaves_the_job_failed(tiny_db, tmp_path_factory):
    app_db = f"sqlite:///{tmp_path_factory.mktemp('stopdb') / 'app.db'}"
    spec = {"features": [{"sae_id": SAE, "feature": 40}], "max_new_tokens": 32, "temperature": 0.8}
    body = {"spec": spec, "prompts": PROMPTS.split("\n") * 4, "strengths": [0, 1, 2, 4, 8], "seeds": 2}
    with serving(tiny_db, tmp_path_factory, QSCOPE_APP_DB_URL=app_db) as base:
        started = post(base, "/api/steer-eval", body)
        for _ in range(1200):
            if get(base, started["json_url"])["progress"].get("done", 0) > 0:
                break
            time.sleep(0.1)
    # stopped (SIGTERM) mid-run; the next server on the same app database
    with serving(tiny_db, tmp_path_factory, QSCOPE_APP_DB_URL=app_db) as base:
        job = get(base, started["json_url"])
        assert job["status"] == "failed" and "server stopped" in job["error"] and job["result"] is None
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + started["recipe_url"])
        assert err.value.code == 404
