"""Steering evaluations through the app (TestClient on the tiny default): a job from POST to recipe, the recipe
reloaded and run again, bad input (422 naming the limit), cancel mid-run, a server stop mid-run, the buttons."""

import base64
import json
from urllib.parse import quote

import pytest
import torch
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.steer.evaluate.recipes import RecipeStore
from qscope.steer.spec import FeatureSteer
from qscope.web import create_app
from tests.helpers.timing import wait_until

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
PROMPTS = ["The cat sat on the", "Once upon a time", "The weather today is"]


def settings_for(tmp_path_factory, **kw) -> Settings:
    db = tmp_path_factory.mktemp("appdb") / "app.db"
    return Settings(app_db_url=f"sqlite:///{db}", device="cpu", rate_steer_per_min=0, steer_eval_max_rows=400, **kw)


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with TestClient(create_app([tiny_db], settings_for(tmp_path_factory), warm_search=False)) as c:
        yield c
    torch.set_num_threads(before)


GREEDY = {
    "features": [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": 1}],
    "temperature": 0,
    "max_new_tokens": 12,
    "seed": 1,
}


def body(**kw):
    spec = {
        "features": [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": 1}],
        "temperature": 0.8,
        "max_new_tokens": 6,
        "seed": 1,
    }
    return {"spec": spec, "prompts": PROMPTS, "strengths": [0, 2, 8], "seeds": 2, "random_controls": 1, **kw}


def wait(client, url, until=("done", "failed", "cancelled"), timeout=300):
    last: dict = {}

    def reached() -> bool:
        last["job"] = client.get(url).json()
        return last["job"]["status"] in until

    wait_until(reached, timeout, f"{url} to reach {until}", poll_s=0.1)
    return last["job"]


@pytest.fixture(scope="module")
def finished(client):
    r = client.post("/api/steer-eval", json=body())
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["rows"] == 3 * 2 * (1 + 3 + 2 + 2)  # prompts x seeds x (unsteered, 3 strengths, negated, random)
    return started, wait(client, started["json_url"])


def test_a_job_runs_to_a_recipe(client, finished):
    started, job = finished
    assert job["status"] == "done" and job["recipe_url"] == started["recipe_url"] == f"/recipes/{started['id']}"
    result = job["result"]
    assert {p["arm"] for p in result["table"]} == {"unsteered", "intervention", "negated", "random"}
    assert result["verdict"]["status"] in ("works", "works but hurts fluency", "no better than controls")
    assert len(result["rows"]) == started["rows"] and result["identity"]["saes"][0]["sha256"]
    page = client.get(started["url"]).text
    assert page.count('class="plot sweep"') == 2 and 'id="recipe-link"' in page and "Verdict" in page
    # both measures, and which one the verdict goes by, and why
    assert result["measure"] in ("reads", "writes") and result["verdict"]["measure"] == result["measure"]
    assert result["measure_reason"] and all(p["writes"]["n"] > 0 for p in result["table"])
    assert "reads (fires)" in page and "writes (promoted)" in page and f"<b>{result['measure']}</b>" in page


def test_recipe_reloads_with_the_same_table_and_runs_again_the_same(client, finished):
    started, job = finished
    recipe = client.get(started["recipe_url"] + ".json").json()
    assert recipe["table"] == job["result"]["table"] and recipe["rows"] == job["result"]["rows"]
    html = client.get(started["recipe_url"]).text
    assert "Run again" in html and html.count('class="plot sweep"') == 2
    md = client.get(started["recipe_url"] + ".md")
    assert md.headers["content-type"].startswith("text/markdown") and md.text.startswith("# Recipe: add layer1#40")
    assert "| intervention | 8 |" in md.text and "sha256" in md.text
    assert "writes (promoted)" in md.text and f"The verdict goes by **{recipe['measure']}**" in md.text
    listed = client.get("/recipes.json").json()["recipes"]
    assert started["id"] in [r["id"] for r in listed]
    assert started["recipe_url"] in client.get("/recipes").text

    again = client.post(f"/api/recipes/{started['id']}/run-again", json={})
    assert again.status_code == 202, again.text
    rerun = wait(client, again.json()["json_url"])["result"]
    assert rerun["table"] == recipe["table"]  # same prompts, seeds, controls: the same numbers
    assert [r["text"] for r in rerun["rows"]] == [r["text"] for r in recipe["rows"]]


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"prompts": ["only one"]}, 422, "1 prompt(s); an evaluation needs at least 2"),
        ({"prompts": PROMPTS * 10, "strengths": [0, 1, 2, 4, 8]}, 422, "needs 840 rows (30 prompts x 2 seeds x 14 arm"),
        ({"prompts": PROMPTS * 10, "strengths": [0, 1, 2, 4, 8]}, 422, "at most 400 rows (max_rows)"),
        ({"seeds": 9}, 422, "9 seeds asked; at most 8"),
        (
            {
                "prompts": None,
                "prompts_file": {"name": "p.txt", "content_base64": base64.b64encode(b"\x00\xff\x00").decode()},
            },
            422,
            "the file 'p.txt' is not text",
        ),
        ({"spec": {"features": [{"sae_id": SAE, "feature": 999999}]}}, 422, "feature 999999 is out of range"),
        ({"spec": {"features": [{"sae_id": "nope", "feature": 1}]}}, 422, "no SAE 'nope'"),
        ({"spec": {"features": []}}, 422, "steers no feature"),
        ({"strengths": [0, 500]}, 422, "strength 500 of the sweep is outside"),
        ({"metrics": {"regex": "("}}, 422, "not a regular expression"),
        ({"metrics": {"regex": "((a{65535}){65535}){65535}"}}, 422, "too large once its counted repeats"),
        ({"strengths": ["NaN", 1]}, 422, "strengths.0: Input should be a finite number (got 'NaN')"),
        (
            {
                "prompts": None,
                "prompts_file": {"name": "p.json", "content_base64": base64.b64encode(b"[" * 3000).decode()},
            },
            422,
            "the file 'p.json', line 1: JSON nested too deeply",
        ),
        ({"prompt_set": "prose"}, 422, "give exactly one of"),
        ({"diffmean": {"discovery": "nope"}}, 422, "diffmean: no discovery 'nope'"),
        ({"diffmean": {"with_concept": ["a b", "c d"]}}, 422, "without_concept is missing"),
        ({"diffmean": {"with_concept": ["x"] * 65, "without_concept": ["y", "z"]}}, 422, "give 2 to 64 (max_prompts)"),
        ({"diffmean": {"discovery": "d", "without_concept": ["y", "z"]}}, 422, "not both"),
    ],
)
def test_bad_input_gets_a_422_that_says_why(client, change, status, says):
    r = client.post("/api/steer-eval", json=body(**change))
    assert r.status_code == status, r.text
    assert says in r.json()["error"]


def test_a_chat_evaluation_runs_its_prompts_through_the_chat_template(client):
    r = client.post("/api/steer-eval", json=body(chat=True, strengths=[0, 2], seeds=1) | {"spec": GREEDY})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["json_url"])
    assert job["status"] == "done", job["error"]
    unsteered = {row["prompt"]: row["text"] for row in job["result"]["rows"] if row["arm"] == "unsteered"}
    for i, prompt in enumerate(PROMPTS):  # as /api/steer answers the prompt sent as one user message
        messages = [{"role": "user", "content": prompt}]
        steer = client.post("/api/steer", json=GREEDY | {"messages": messages})
        assert steer.status_code == 200, steer.text
        assert unsteered[i] == steer.json()["default"]["text"]
    assert job["result"]["request"]["chat"] is True


def test_a_regex_that_runs_too_long_is_reported_not_run_for_ever(client):
    r = client.post("/api/steer-eval", json=body(metrics={"regex": "(.|.|.)*(?!)"}, seeds=1) | {"spec": GREEDY})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["json_url"], timeout=120)
    assert job["status"] == "done", job["error"]
    assert any("timed out" in note for note in job["result"]["notes"]), job["result"]["notes"]
    assert any(row["metrics"]["regex"] is None for row in job["result"]["rows"])  # not measured: null


def test_a_recipe_stored_with_a_nan_strength_still_renders_and_runs_again(client, finished):
    """Before strengths had to be finite, "NaN" was taken and stored as null: such a recipe answered 500."""
    from sqlalchemy.orm import Session

    from qscope.steer.evaluate import recipes

    started, _ = finished
    store = client.app.state.evaluations.store
    with Session(store.engine) as s, s.begin():
        row = s.get(recipes.RecipeRow, started["id"])
        stored = json.loads(row.result)
        stored["request"]["strengths"] = [None, *stored["request"]["strengths"]]
        stored["strengths"] = [None, *stored["strengths"]]
        s.add(recipes.RecipeRow(**{**row_fields(row), "id": "old-nan", "result": json.dumps(stored)}))
    store.add_job("old-nan", "tiny-demo", "{}")
    store.update_job("old-nan", "done", {})
    for url in ("/steer-eval/old-nan", "/steer-eval/old-nan.json"):
        assert client.get(url).status_code == 200, url
    for url in ("/recipes/old-nan", "/recipes/old-nan.json", "/recipes/old-nan.md"):
        assert client.get(url).status_code == 200, url
    recipe = client.get("/recipes/old-nan.json").json()
    assert None not in recipe["request"]["strengths"] and "not a finite number" in " ".join(recipe["notes"])
    again = client.post("/api/recipes/old-nan/run-again", json={})
    assert again.status_code == 202, again.text
    client.post(again.json()["cancel_url"])


def row_fields(row) -> dict:
    return {c: getattr(row, c) for c in ("id", "created_at", "model_id", "title", "verdict", "strength", "result")}


def test_cancel_mid_run_keeps_nothing(client):
    r = client.post("/api/steer-eval", json=body(prompts=PROMPTS * 4, strengths=[0, 1, 2, 4, 8], seeds=2))
    started = r.json()
    wait(client, started["json_url"], until=("running",))
    generated = lambda: client.get(started["json_url"]).json()["progress"].get("done", 0) > 0  # noqa: E731
    wait_until(generated, 30, "some rows done", poll_s=0.05)  # let it generate a little first
    cancelled = client.post(started["cancel_url"])
    assert cancelled.status_code == 200
    job = wait(client, started["json_url"])
    assert job["status"] == "cancelled" and job["result"] is None and "no result" in job["error"]
    assert client.get(started["recipe_url"] + ".json").status_code == 404
    events = client.get(started["events_url"]).text
    assert "event: end" in events and '"status":"cancelled"' in events
    assert client.post("/api/steer", json={"prompt": "Hi", "max_new_tokens": 2}).status_code == 200  # worker free


def test_server_stop_mid_run_marks_the_job_failed(tiny_db, tmp_path_factory):
    settings = settings_for(tmp_path_factory)
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        started = c.post("/api/steer-eval", json=body(prompts=PROMPTS * 4, strengths=[0, 1, 2, 4, 8])).json()
        wait(c, started["json_url"], until=("running",))
    store = RecipeStore(settings.app_db.url)  # the app database as the next server sees it
    job = store.job(started["id"])
    assert job.status == "failed" and "server stopped" in job.error
    assert store.recipe(started["id"]) is None


def test_the_api_is_in_the_openapi_schema(client):
    paths = client.get("/-/openapi.json").json()["paths"]
    assert "202" in paths["/api/steer-eval"]["post"]["responses"]
    assert {
        "/api/steer-eval/{job_id}/cancel",
        "/api/steer-eval/{job_id}/events",
        "/api/recipes/{recipe_id}/run-again",
    } <= set(paths)
    assert set(paths["/recipes/{recipe_id}.md"]["get"]["responses"]["200"]["content"]) == {"text/markdown"}


def test_evaluate_buttons_and_the_prefilled_form(client):
    model_id = client.get("/.json").json()["models"][0]["model_id"]
    page = client.get(f"/{model_id}/{SAE}/40").text
    link = f"/steer-eval?model_id={model_id}&amp;sae_id={SAE}&amp;feature=40"
    assert f'href="{link}">Evaluate this steer' in page
    form = client.get(link.replace("&amp;", "&")).text
    init = json.loads(form.split('id="eval-init">')[1].split("</script>")[0])
    expected = FeatureSteer(sae_id=SAE, feature=40, mode="add", strength=1.0).model_dump()
    assert init["request"]["spec"]["features"][0] == expected
    assert 'id="evaluate"' in client.get("/steer").text
    spec = {"prompt": "", "features": [{"sae_id": SAE, "feature": 7, "mode": "ablate"}]}
    form = client.get("/steer-eval?spec=" + quote(json.dumps(spec))).text
    assert '"feature": 7' in form and '"mode": "ablate"' in form
    assert client.get("/steer-eval?spec=nonsense").status_code == 422
    prefilled = client.get("/steer-eval?discovery=d42").text  # from a discovery's page: its DiffMean arm
    assert 'name="diffmean_discovery" maxlength="64" size="20" value="d42"' in prefilled
    assert client.get("/steer-eval/nope").status_code == 404 and client.get("/recipes/nope.json").status_code == 404


def test_a_job_of_a_killed_server_reads_as_failed(tmp_path):
    import subprocess

    from sqlalchemy.orm import Session

    from qscope.steer.evaluate import recipes

    store = RecipeStore(f"sqlite:///{tmp_path}/app.db")
    store.add_job("j1", "m", "{}")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid of this host that no longer runs: the server that ran the job was killed
    with Session(store.engine) as s, s.begin():
        row = s.get(recipes.JobRow, "j1")
        row.owner, row.status = f"{recipes.HOST}:{dead.pid}:0000", "running"
    job = store.job("j1")
    assert job.status == "failed" and "server stopped" in job.error
    store.add_job("j2", "m", "{}")  # this process's own job stays as it is
    assert store.job("j2").status == "queued"


def test_suggest_finds_the_feature_a_set_was_made_for(client):
    r = client.get("/api/steer-eval/suggest", params={"prompt_set": "prose-to-code"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["feature"]["mode"] == "add" and got["feature"]["sae_id"].endswith("layer1")
    assert got["url"].endswith(f"/{got['feature']['feature']}")
    assert client.get("/api/steer-eval/suggest", params={"prompt_set": "prose"}).status_code == 422


def test_an_unknown_measure_is_a_422(client):
    r = client.post("/api/steer-eval", json=body(measure="vibes"))
    assert r.status_code == 422 and "measure" in r.text


def test_recipe_markdown_carries_html_and_markdown_from_users_as_text(client):
    hostile = ["<script>alert(1)</script> The cat", "[click](javascript:alert(1)) Once", "<img src=x onerror=alert(1)>"]
    r = client.post(
        "/api/steer-eval",
        json=body(prompts=hostile, instruction="<b>bold</b> `tick`", strengths=[2], seeds=1, random_controls=1),
    )
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["json_url"])
    assert job["status"] == "done", job
    md = client.get(r.json()["recipe_url"] + ".md").text
    assert "<script" not in md and "<img" not in md and "<b>" not in md and "[click](" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; The cat" in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "\\[click\\](javascript:alert(1)) Once" in md  # no link: the brackets are escaped
    assert "Instruction (prompt-only arms): &lt;b&gt;bold&lt;/b&gt; \\`tick\\`" in md


def test_suggest_for_a_decrease_set_is_a_live_feature_suppressed(client):
    """A "decrease" set (quote-attribution) suggests the feature that fires on the attribution lines, with a
    negative strength: never a dead feature (whose gap was -inf, flipped to +inf by the goal's sign), which Start
    would then refuse with 422."""
    r = client.get("/api/steer-eval/suggest", params={"prompt_set": "quote-attribution"})
    assert r.status_code == 200, r.text
    feature = r.json()["feature"]
    assert feature["mode"] == "add" and feature["strength"] < 0
    page = client.get(r.json()["url"] + ".json").json()
    assert page["detail"]["row"]["max_act"] > 0  # alive in the store
    spec = {"features": [feature], "temperature": 0.8, "max_new_tokens": 2, "seed": 1}
    started = client.post(
        "/api/steer-eval",
        json={"spec": spec, "prompt_set": "quote-attribution", "strengths": [1], "seeds": 1, "random_controls": 0},
    )
    assert started.status_code == 202, started.text
    client.post(f"/api/steer-eval/{started.json()['id']}/cancel")


def test_a_diffmean_arm_from_a_discovery_is_run_compared_and_shown(client):
    found = client.post(
        "/api/discover",
        json={
            "demo": "code-vs-prose",
            "demo_n": 12,
            "wait": True,
            "options": {"top": 4, "n_shuffles": 2, "n_random": 20, "logreg": False, "baselines": False},
        },
    )
    assert found.status_code == 200, found.text
    d = found.json()
    n_with = sum(e["label"] == 1 and e["split"] == "train" for e in d["examples"])
    r = client.post(
        "/api/steer-eval",
        json=body(strengths=[0, 1], seeds=1, random_controls=0, diffmean={"discovery": d["id"]}),
    )
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["rows"] == 3 * (1 + 2 + 1 + 1)  # prompts x (unsteered, 2 strengths, negated, diffmean)
    result = wait(client, started["json_url"])["result"]
    dm, c = result["diffmean"], result["comparison"]
    assert dm["discovery"] == d["id"] and dm["n_with"] == n_with and dm["residual_norm"] > 0
    assert "diffmean" in {b["arm"] for b in c["arms"]} and "DiffMean" in c["sentence"]
    # run again needs no discovery: the request keeps the texts
    assert result["request"]["diffmean"]["discovery"] is None and len(result["request"]["diffmean"]["with_concept"])
    page = client.get(started["recipe_url"]).text
    assert 'id="arms-compared"' in page and "s-diffmean" in page and c["sentence"].split(" (")[0] in page
    md = client.get(started["recipe_url"] + ".md").text
    assert "## Arms compared" in md and f"discovery {d['id']} (its train split)" in md
