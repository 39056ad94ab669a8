"""The discover API and pages on the tiny default store (TestClient): discovery jobs, detectors and /api/detect
against activations computed here by hand, footprints (API and files), bad input as 422s, the OpenAPI schema."""

import base64

import numpy as np
import pytest
import torch

from qscope.discover import footprint_files
from qscope.discover.footprints import Stats
from qscope.model import capture, rank_mask
from tests.helpers.apps import app_client, app_settings
from tests.helpers.timing import wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MAX_FILE = 20_000


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    settings = app_settings(
        tmp_path_factory.mktemp("app"),
        rate_inspect_per_min=0,
        discover_max_tokens=48,
        discover_max_file_bytes=MAX_FILE,
        discover_max_body_bytes=200_000,
    )
    with app_client([tiny_db], settings) as c:
        yield c


@pytest.fixture(scope="module")
def discovery(client):
    r = client.post(
        "/api/discover",
        json={"demo": "code-vs-prose", "demo_n": 60, "wait": True, "options": {"top": 8, "n_shuffles": 5}},
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(client, job: dict) -> dict:
    last = {"job": job}

    def ended() -> bool:
        if last["job"]["state"] not in ("done", "failed", "cancelled"):
            last["job"] = client.get(job["status_url"]).json()
        return last["job"]["state"] in ("done", "failed", "cancelled")

    wait_until(ended, 120, f"job {job['status_url']} to end", poll_s=0.1)
    return last["job"]


def test_discover_page_offers_the_demo_sets(client):
    page = client.get("/discover")
    assert page.status_code == 200 and "Python code vs English prose" in page.text
    filled = client.get("/discover?demo=code-vs-prose&n=10")
    assert filled.status_code == 200 and filled.text.count("</textarea>") == 2
    data = client.get("/discover.json").json()
    assert {d["name"] for d in data["demos"]} >= {"code-vs-prose", "docstrings-vs-code"}
    assert len(client.get("/discover.json?demo=code-vs-prose&n=10").json()["a"].splitlines()) == 10
    assert client.get("/discover?demo=nope").status_code == 404


def test_discovery_result_page_and_twin(client, discovery):
    assert discovery["url"] == f"/discover/{discovery['id']}"
    top = discovery["ranking"]["a_side"][0]
    assert top["test_auroc"] > discovery["ranking"]["baseline"]["p95"]
    page = client.get(discovery["url"])
    assert page.status_code == 200
    for text in (
        "Save a detector",
        f"#{top['feature']}",
        'svg class="strip"',
        "Evaluate steer",
        f"/steer?sae_id={top['sae_id']}&amp;feature={top['feature']}",
        "/steer-eval?",
        'id="reading"',  # the numbers with a sentence saying what they mean (issue 29, item 9)
        f"The top feature&#39;s test AUROC, {top['test_auroc']:.3f}, is above the 95th percentile",
    ):
        assert text in page.text, text
    twin = client.get(discovery["url"] + ".json").json()
    assert twin["id"] == discovery["id"] and twin["ranking"]["a_side"][0] == top
    assert client.get("/discover/nothing").status_code == 404
    assert client.get("/discover/nothing.json").json()["status"] == 404


def test_jobs_report_progress_and_cancel(client):
    body = {"demo": "docstrings-vs-code", "demo_n": 40, "options": {"n_shuffles": 2}}
    first = client.post("/api/discover", json=body)
    second = client.post("/api/discover", json=body)  # waits behind the first
    assert first.status_code == second.status_code == 202
    cancelled = client.post(second.json()["cancel_url"]).json()
    assert cancelled["state"] == "cancelled" or wait_job(client, cancelled)["state"] == "cancelled"
    done = wait_job(client, first.json())
    assert done["state"] == "done" and done["phase"] and done["result_url"].startswith("/discover/")
    assert client.get(done["result_url"]).status_code == 200
    assert client.get("/api/jobs/nothing").status_code == 404


def hand_pooled(model, sae, tokenizer, text: str, feature: int, max_tokens: int, skip_first=True, ratio=10.0):
    """The max of one feature over the tokens that count, computed here without qscope.discover."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    hidden = capture(model, [sae.site], torch.tensor([ids]))[sae.site]
    counted = rank_mask(hidden, skip_first and len(ids) > 1, ratio)[0]
    with torch.no_grad():
        acts = sae.encode(hidden[0])[:, feature]
    return float(acts[counted].max()) if counted.any() else 0.0


def test_detector_saved_reopened_and_detect_equals_the_rule(client, discovery):
    terms = [{"sae_id": s["sae_id"], "feature": s["feature"]} for s in discovery["ranking"]["a_side"][:2]]
    r = client.post(
        "/api/detectors",
        json={"discovery": discovery["id"], "spec": {"kind": "rule", "combine": "any", "terms": terms}},
    )
    assert r.status_code == 200, r.text
    saved = r.json()
    t = saved["test"]
    assert t["precision"] == pytest.approx(t["tp"] / (t["tp"] + t["fp"]))
    assert t["recall"] == pytest.approx(t["tp"] / (t["tp"] + t["fn"]))
    assert t["f1"] == pytest.approx(2 * t["tp"] / (2 * t["tp"] + t["fp"] + t["fn"]))
    page = client.get(saved["url"])
    assert page.status_code == 200 and f'id="tp">{t["tp"]}<' in page.text and "Try it" in page.text
    assert client.get(saved["url"] + ".json").json()["detector"] == saved["detector"]
    assert any(d["id"] == saved["id"] for d in client.get("/detectors.json").json()["detectors"])

    texts = [e["text"] for e in discovery["examples"] if e["split"] == "test"]
    out = client.post("/api/detect", json={"detector": saved["id"], "texts": texts})
    assert out.status_code == 200, out.text
    lm, saes = client.app.state.live.get(discovery["model_id"]).load()
    thresholds = [term["threshold"] for term in saved["detector"]["terms"]]
    assert 0 < sum(r["fired"] for r in out.json()["results"]) < len(texts)  # both decisions are checked
    for text, result in zip(texts, out.json()["results"], strict=True):
        pooled = [
            hand_pooled(lm.model, saes[term["sae_id"]], lm.tokenizer, text, term["feature"], 48) for term in terms
        ]
        assert result["fired"] == any(p > th for p, th in zip(pooled, thresholds, strict=True)), text
        assert result["pooled"] == pytest.approx(pooled, abs=1e-4)
        tripped = [tok for tok in result["tokens"] if tok["tripped"]]
        assert bool(tripped) == result["fired"]
        for tok in tripped:
            assert all(tok["acts"][n] > thresholds[n] for n in tok["tripped"])


def test_logreg_detector(client, discovery):
    r = client.post("/api/detectors", json={"discovery": discovery["id"], "spec": {"kind": "logreg"}})
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["detector"]["kind"] == "logreg" and saved["test"]["f1"] is not None
    out = client.post("/api/detect", json={"detector": saved["id"], "texts": "return self._data[key]\nThe end."})
    assert out.status_code == 200 and len(out.json()["results"]) == 2


def hand_residual_mean(model, site: str, tokenizer, text: str, max_tokens: int, ratio=10.0) -> np.ndarray:
    """The residual at `site` averaged over the tokens that count, computed here without qscope.discover."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    hidden = capture(model, [site], torch.tensor([ids]))[site]
    counted = rank_mask(hidden, len(ids) > 1, ratio)[0]
    return hidden[0][counted].double().mean(0).numpy()


@pytest.mark.parametrize("kind, method", [("diffmean", "DiffMean"), ("probe", "probe")])
def test_a_baseline_saved_as_a_detector_scores_as_the_discovery_judged_it(client, discovery, kind, method):
    """Issue 26: a detector from a baseline, on the discovery's own split and pooling, so its held-out AUROC and F1
    are those the discovery's baselines table shows; /api/detect scores the mean residual on the same direction."""
    site_row = discovery["baselines"][-1]["comparison"]
    site = site_row["site"]
    judged = next(m for m in site_row["methods"] if m["method"] == method)
    r = client.post("/api/detectors", json={"discovery": discovery["id"], "spec": {"kind": kind, "site": site}})
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["detector"]["site"] == site and saved["detector"]["terms"] == []
    assert saved["test"]["auroc"] == pytest.approx(judged["test_auroc"], abs=1e-6)
    assert saved["test"]["f1"] == pytest.approx(judged["test_f1"], abs=1e-6)
    page = client.get(saved["url"])
    assert page.status_code == 200 and 'id="direction"' in page.text and site in page.text
    assert f"{method if kind == 'diffmean' else 'probe'} on {site}" in saved["name"]

    test = [e for e in discovery["examples"] if e["split"] == "test"]
    texts = [e["text"] for label in (1, 0) for e in test if e["label"] == label][:6] + [
        e["text"] for e in test if e["label"] == 0
    ][:6]
    out = client.post("/api/detect", json={"detector": saved["id"], "texts": texts})
    assert out.status_code == 200, out.text
    assert 0 < sum(r["fired"] for r in out.json()["results"]) < len(texts)  # both decisions are checked
    lm, _ = client.app.state.live.get(discovery["model_id"]).load()
    w = np.asarray(saved["detector"]["direction"])
    for text, result in zip(texts, out.json()["results"], strict=True):
        score = float(hand_residual_mean(lm.model, site, lm.tokenizer, text, 48) @ w + saved["detector"]["intercept"])
        assert result["score"] == pytest.approx(score, abs=1e-3) and result["fired"] == (score > 0), text
        tripped = [tok for tok in result["tokens"] if tok["tripped"]]
        assert all(tok["acts"][0] > 0 and tok["counted"] for tok in tripped)
        assert not tripped or result["fired"]


def test_a_baseline_detector_at_a_site_that_is_not_hooked_gets_422(client, discovery):
    r = client.post(
        "/api/detectors", json={"discovery": discovery["id"], "spec": {"kind": "diffmean", "site": "model.layers.99"}}
    )
    assert r.status_code == 422 and "not hooked here" in r.json()["error"], r.text
    long = client.post(
        "/api/detectors", json={"discovery": discovery["id"], "spec": {"kind": "probe", "site": "x" * 300}}
    )
    assert long.status_code == 422, long.text


def post_sets(client, **body):
    return client.post("/api/discover", json={"wait": True, "options": {"n_shuffles": 2}, **body})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"a": "x = 1\ny = 2\nz = 3\nw = 4", "b": "\n\n"}, "only one class: set B is empty"),
        ({"labelled_file": {"name": "d.csv", "content": "text,kind\nhi,1\n"}}, "no label column 'label'"),
        ({"a_file": {"name": "a.txt", "content": "x\n" * (MAX_FILE // 2 + 1)}}, f"at most {MAX_FILE:,} bytes"),
        ({"a_file": {"name": "a.pdf", "content": "x"}}, "unknown file type '.pdf'"),
        ({"demo": "nope"}, "no demo set 'nope'"),
        ({"labelled_file": {"name": "d.csv", "content": "text,label\nhi,spam\n"}}, "positive_label"),
        ({"a_file": {"name": "a.jsonl", "content": "[" * 5000 + "]" * 5000}}, "line 1: JSON nested too deeply"),
        (
            {"a": "x one\ny one\nz one\nw one", "b": "q two\nr two\ns two\nt two", "options": {"seed": 2**32}},
            "options.seed",
        ),
    ],
)
def test_bad_examples_get_422_naming_the_problem(client, body, says):
    r = post_sets(client, **body)
    assert r.status_code == 422, r.text
    assert says in r.json()["error"]


def test_cleaning_and_truncation_are_reported(client):
    code = [f"value_{i} = compute(item[{i}], key={i})" for i in range(8)]
    prose = [f"The weather on day {i} was calm and the people walked home slowly." for i in range(8)]
    long_one = " ".join(["The long road went on and on through the quiet valley."] * 20)
    csv = "text,label\n" + "".join(f'"{t}",0\n' for t in prose[4:]) + "".join(f'"{t}",1\n' for t in code[4:])
    r = post_sets(
        client,
        a="\n".join(code[:4]) + "\n\n" + code[0] + "\nshared line here",
        b="\n".join(prose[:4]) + f"\nshared line here\n{long_one}",
        labelled_file={"name": "more.csv", "content": csv},
    )
    assert r.status_code == 200, r.text
    notes = " | ".join(r.json()["notes"])
    assert "1 empty line(s) of set A skipped" in notes
    assert "1 repeated example(s) within set A" in notes
    assert "1 example(s) found in both sets dropped from both" in notes
    assert "1 example(s) longer than 48 tokens cut" in notes
    assert len(r.json()["examples"]) == 17 and sum(e["truncated"] for e in r.json()["examples"]) == 1


def test_detector_and_detect_refusals(client, discovery):
    terms = [{"sae_id": s["sae_id"], "feature": s["feature"]} for s in discovery["ranking"]["a_side"][:6]]
    six = client.post("/api/detectors", json={"discovery": discovery["id"], "spec": {"terms": terms}})
    assert six.status_code == 422 and "1 to 5" in six.json()["error"]
    assert client.post("/api/detectors", json={"discovery": "nope", "spec": {"terms": terms[:1]}}).status_code == 404
    assert client.post("/api/detect", json={"detector": "nope", "texts": ["x"]}).status_code == 404
    one = client.post("/api/detectors", json={"discovery": discovery["id"], "spec": {"terms": terms[:1]}}).json()
    empty = client.post("/api/detect", json={"detector": one["id"], "texts": "\n \n"})
    assert empty.status_code == 422 and "nothing to score" in empty.json()["error"]
    big = client.post(
        "/api/discover", content=b"{" + b" " * 300_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 413 and "200,000" in big.json()["error"]


@pytest.mark.parametrize("threshold", ["NaN", "0.5", True])
def test_a_detector_threshold_is_a_finite_number(client, threshold):
    term = {"sae_id": "any", "feature": 1, "threshold": threshold}
    r = client.post("/api/detectors", json={"discovery": "nope", "spec": {"terms": [term]}})
    assert r.status_code == 422 and "threshold: Input should be a finite number" in r.json()["error"], r.text


def test_footprints_self_overlap_and_demo_comparison(client):
    lines = "\n".join(f"item_{i} = table.get(key_{i}, default)" for i in range(20))
    same = client.post("/api/footprints", json={"a": lines, "b": lines, "wait": True, "share": 0.3})
    assert same.status_code == 200, same.text
    c = same.json()["comparison"]
    assert c["overlap"] == 1.0 and c["a_covered_by_b"] == 1.0 and c["n_only_a"] == 0
    demo = client.post("/api/footprints", json={"demo": "code-vs-prose", "demo_n": 40, "wait": True})
    assert demo.status_code == 200, demo.text
    rec = demo.json()
    assert 0 <= rec["comparison"]["overlap"] < 1 and rec["comparison"]["only_a"][0]["label"] is not None
    page = client.get(rec["url"])
    assert page.status_code == 200 and 'class="overlap"' in page.text and "Only Python code" in page.text
    assert client.get(rec["url"] + ".json").json()["comparison"] == rec["comparison"]
    assert client.get("/footprints").status_code == 200 and client.get("/footprints.json").json()["recent"]


def test_footprint_file_upload_is_drawn(client, tmp_path):
    keys = [("SAE-Res-mini-qwen-W512-L0_16__layer1", f) for f in range(4)]
    a = Stats("code", keys, np.array([0.5, 0.3, 0.0, 0.0]), np.array([0.6, 0.4, 0.0, 0.0]), 10, 100)
    b = Stats("prose", keys, np.array([0.5, 0.0, 0.4, 0.0]), np.array([0.5, 0.0, 0.5, 0.0]), 10, 100)
    path = footprint_files.write(tmp_path / "fp.parquet", a, b, "examples", 0.2, {keys[1]: "one"}, {"model_id": "m"})
    data = base64.b64encode(path.read_bytes()).decode()
    r = client.post("/api/footprints/upload", json={"name": "fp.parquet", "data_b64": data})
    assert r.status_code == 200, r.text
    c = r.json()["comparison"]
    assert c["overlap"] == pytest.approx(1 / 3) and c["only_a"][0]["label"] == "one"
    assert "fp.parquet" in client.get(r.json()["url"]).text
    bad = client.post("/api/footprints/upload", json={"name": "fp.parquet", "data_b64": "!!"})
    assert bad.status_code == 422 and "base64" in bad.json()["error"]
    junk = base64.b64encode(b"junk").decode()
    wrong = client.post("/api/footprints/upload", json={"name": "fp.csv", "data_b64": junk})
    assert wrong.status_code == 422 and ".parquet or .duckdb" in wrong.json()["error"]


def test_openapi_lists_the_discover_api(client):
    schema = client.get("/-/openapi.json").json()
    for path in (
        "/api/discover",
        "/api/detectors",
        "/api/detect",
        "/api/footprints",
        "/api/footprints/upload",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
    ):
        assert path in schema["paths"], path
    assert "429" in schema["paths"]["/api/detect"]["post"]["responses"]
    assert schema["paths"]["/api/detect"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_strip_draws_each_example_and_bins_many():
    from qscope.web.discover_plots import MAX_BARS, strip

    svg = strip([1.0, 0.0, 2.0, 0.5], [1, 1, 0, 0], [False, True, False, True], threshold=0.7)
    assert svg.count("<rect") == 3 and 'class="sb te"' in svg and 'x1="120.00"' in svg  # A | B halfway
    assert 'class="thr"' in svg
    many = strip([1.0] * 5000, [1] * 2500 + [0] * 2500, [False] * 5000)
    assert many.count("<rect") <= MAX_BARS + 2
