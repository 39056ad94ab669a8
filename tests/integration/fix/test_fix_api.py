"""`POST /api/fix` end to end on the tiny default store (TestClient, small sizes): the discovery, the candidates,
one batched evaluation, the ranking (it agrees with the evaluation's comparison), the recipe saved and its
permalink, the result's permalink and twin, cancel, and bad input as 422s."""

import time

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.fix.ranking import is_intervention
from qscope.web import create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"per_sae": 1, "max_prompts": 3, "seeds": 1, "random_controls": 1, "max_new_tokens": 6, "strengths": [0, 2]}


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    db = tmp_path_factory.mktemp("appdb") / "app.db"
    settings = Settings(app_db_url=f"sqlite:///{db}", device="cpu", rate_inspect_per_min=0, discover_max_tokens=32)
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c


def body(**fix) -> dict:
    return {
        "demo": "code-vs-prose",
        "demo_n": 12,
        "options": {"n_shuffles": 2, "n_random": 20, "top": 8},
        "fix": SMALL | fix,
    }


@pytest.fixture(scope="module")
def fixed(client):
    r = client.post("/api/fix", json=body() | {"wait": True})
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(client, job: dict) -> dict:
    for _ in range(1200):
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
        job = client.get(job["status_url"]).json()
    raise AssertionError(f"job never finished: {job}")


def test_a_fix_ranks_every_candidate_and_diffmean_and_saves_a_recipe(client, fixed):
    assert fixed["url"] == f"/fix/{fixed['id']}"
    arms = [x["arm"] for x in fixed["interventions"]]
    # one candidate per SAE (2 SAEs) and DiffMean, all in the one evaluation
    assert sorted(arms) == sorted(["intervention", "candidate-1", "diffmean"])
    recipe = client.get(f"/recipes/{fixed['recipe']}.json")
    assert recipe.status_code == 200
    r = recipe.json()
    c = r["comparison"]
    # the ranking is the comparison's order of the interventions' arms, with its own standing and ranks
    assert arms == [b["arm"] for b in c["arms"] if is_intervention(b["arm"])]
    assert {p["arm"] for p in r["table"]} >= {"unsteered", "intervention", "candidate-1", "diffmean", "random"}
    assert r["request"]["candidates"][0]["feature"] == fixed["candidates"][1]["feature"]
    assert r["concept"] == {"sae_id": fixed["concept"]["sae_id"], "feature": fixed["concept"]["feature"]}
    ranked = [x for x in fixed["interventions"] if x["rank"] is not None]
    assert [x["rank"] for x in ranked] == list(range(1, len(ranked) + 1))
    if ranked:
        assert fixed["best"]["arm"] == ranked[0]["arm"] and ranked[0]["standing"] == "best"
        means = [x["score"]["mean"] for x in ranked]
        assert means == sorted(means, reverse=True)  # goal increase: the best mean first
    assert fixed["comparison"] == c["sentence"]
    assert client.get(f"/recipes/{fixed['recipe']}").status_code == 200
    md = client.get(f"/recipes/{fixed['recipe']}.md").text
    assert "candidate-1" in md and "diffmean" in md
    again = client.post(f"/api/recipes/{fixed['recipe']}/run-again", json={})
    assert again.status_code == 202 and again.json()["rows"] == fixed["rows"]  # every candidate runs again
    client.post(again.json()["cancel_url"])
    assert client.get(f"/discover/{fixed['discovery']}.json").status_code == 200
    for phase in ("discover", "discover: baselines (DiffMean, probe)", "choose candidates", "evaluate", "total"):
        assert phase in fixed["seconds"]


def test_the_result_page_and_its_twin(client, fixed):
    page = client.get(fixed["url"])
    assert page.status_code == 200
    for text in ('id="ranked-table"', 'id="recipe-link"', f"/recipes/{fixed['recipe']}", 'id="fix-sentence"'):
        assert text in page.text
    twin = client.get(f"{fixed['url']}.json")
    assert twin.status_code == 200 and twin.json()["interventions"] == fixed["interventions"]
    assert client.get("/fix/nope").status_code == 404
    form = client.get("/fix?demo=code-vs-prose&n=8")
    assert form.status_code == 200 and form.text.count("</textarea>") == 3
    assert fixed["id"] in client.get("/fix").text  # listed as recent
    twin = client.get("/fix.json").json()
    assert twin["limits"]["max_per_sae"] == 4 and fixed["id"] in [r["id"] for r in twin["recent"]]
    assert 'id="fix-link"' in client.get("/discover").text


def test_a_fix_job_reports_its_phases_and_cancels(client):
    # a long evaluation (8 seeds, 5 strengths, 64 tokens: 528 rows), cancelled once it is generating
    big = {"seeds": 8, "max_new_tokens": 64, "strengths": [0, 1, 2, 4, 8]}
    job = client.post("/api/fix", json=body(**big)).json()
    assert job["kind"] == "fix" and job["cancel_url"].endswith("/cancel")
    seen = []
    for _ in range(3000):
        job = client.get(job["status_url"]).json()
        if job["phase"] not in seen:
            seen.append(job["phase"])
        if job["phase"] == "generating" or job["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.02)
    assert job["state"] == "running" and job["phase"] == "generating", (job, seen)
    assert job["total"] == 3 * 8 * 22 and job["status_url"] == f"/api/jobs/{job['id']}"
    assert "forward + encode" in seen or "baselines (DiffMean, probe)" in seen  # the discovery's phases came first
    cancelled = client.post(job["cancel_url"]).json()
    t0 = time.monotonic()
    done = wait_job(client, cancelled)
    assert done["state"] == "cancelled" and done["result"] is None
    assert time.monotonic() - t0 < 30
    assert client.get(f"/recipes/{job['id']}.json").status_code == 404  # a cancelled evaluation keeps no recipe


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"fix": SMALL | {"per_sae": 9}}, "per_sae"),
        ({"fix": SMALL | {"strengths": [0, 1e9]}}, "outside"),
        ({"fix": SMALL | {"strengths": [0, 0]}}, "non-zero"),
        ({"fix": SMALL | {"seeds": 99}}, "seeds"),
        ({"fix": SMALL | {"max_new_tokens": 100_000}}, "max_new_tokens"),
        ({"fix": SMALL | {"prompts": ["only one"]}}, "at least 2"),
        ({"fix": SMALL | {"goal": "sideways"}}, "goal"),
        ({"demo": "nope"}, "demo"),
        ({"demo": None, "a": "x\ny", "b": "z\nw"}, "usable example"),
    ],
)
def test_bad_input_is_a_422_that_says_why(client, change, says):
    r = client.post("/api/fix", json=body() | change)
    assert r.status_code == 422, r.text
    assert says in r.text


def test_input_that_fails_inside_the_job_is_a_422_when_waiting(client):
    # every check before the job passes (2 prompts of at most 2,000 characters); the evaluation's plan then finds
    # the first prompt longer than the steering prompt limit in tokens: a 422 saying so, not a 500
    long = "ж ξ " * 480
    r = client.post("/api/fix", json=body(prompts=[long, "The cat sat on the"]) | {"wait": True})
    assert r.status_code == 422, r.text
    assert "tokens long" in r.json()["error"]


def test_post_api_fix_takes_from_the_model_run_bucket_like_discover(tiny_db, tmp_path):
    settings = Settings(
        app_db_url=f"sqlite:///{tmp_path / 'app.db'}", device="cpu", rate_inspect_per_min=1, rate_inspect_burst=2
    )
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        bad = body(per_sae=9)  # refused before any model run, but it still costs a token
        assert [c.post("/api/fix", json=bad).status_code for _ in range(2)] == [422, 422]
        refused = c.post("/api/discover", json={"demo": "nope"})  # the bucket discover takes from: empty now
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert c.post("/api/fix", json=bad).status_code == 429
