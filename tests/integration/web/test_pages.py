"""Web tier: every route on the harvested tiny default (TestClient): full page vs htmx partial, the `.json`
twin, `Vary: HX-Request`, 404s that say what exists and 422s that say what is wrong."""

from urllib.parse import urlencode

import duckdb
import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app

HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def store_facts(tiny_db):
    con = duckdb.connect(str(tiny_db), read_only=True)
    try:
        saes = con.execute("SELECT sae_id, model_id, d_sae FROM saes ORDER BY sae_id").fetchall()
        live = con.execute(
            "SELECT feature FROM features WHERE sae_id = ? AND n_fired > 0 ORDER BY n_fired DESC LIMIT 1", [saes[0][0]]
        ).fetchone()[0]
    finally:
        con.close()
    return {"sae_id": saes[0][0], "model_id": saes[0][1], "d_sae": saes[0][2], "saes": saes, "live": live}


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    settings = Settings(device="cpu", max_chars=400, max_tokens=48, cache_dir=tmp_path_factory.mktemp("cache"))
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c


@pytest.fixture(scope="module")
def sae_url(store_facts):
    return f"/{store_facts['model_id']}/{store_facts['sae_id']}"


def is_full(r) -> bool:
    return r.text.lstrip().lower().startswith("<!doctype html>")


def check_twins(client, path, partial_marker):
    """Full page, partial and .json of one page path; returns the JSON."""
    full = client.get(path)
    assert full.status_code == 200, full.text[:300]
    assert full.headers["vary"] == "HX-Request"
    assert is_full(full) and partial_marker in full.text
    part = client.get(path, headers=HX)
    assert part.status_code == 200 and part.headers["vary"] == "HX-Request"
    assert not is_full(part) and "<header" not in part.text and partial_marker in part.text
    base, _, query = path.partition("?")
    js = client.get(f"{base}.json" + (f"?{query}" if query else ""))
    assert js.status_code == 200 and js.headers["content-type"].startswith("application/json")
    return js.json()


def test_home_lists_models_and_saes(client, store_facts):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["vary"] == "HX-Request" and is_full(r)
    for sae_id, _, _ in store_facts["saes"]:
        assert sae_id in r.text
    data = client.get("/.json").json()
    (model,) = data["models"]
    assert model["model_id"] == store_facts["model_id"]
    assert {s["sae"]["sae_id"] for s in model["saes"]} == {s[0] for s in store_facts["saes"]}
    assert model["n_features"] == sum(s[2] for s in store_facts["saes"])
    assert data["stores"][0]["bytes"] > 0


def test_sae_page_full_partial_and_json(client, sae_url, store_facts):
    data = check_twins(client, sae_url, 'class="grid features"')
    assert data["features"]["total"] == store_facts["d_sae"]
    assert [row["feature"] for row in data["features"]["rows"]] == list(range(50))
    assert data["pages"] == -(-store_facts["d_sae"] // 50)
    full = client.get(sae_url).text
    assert "<svg" in full and "Random feature" in full


def test_sae_page_sorts_filters_and_pages(client, sae_url):
    rows = client.get(f"{sae_url}.json?sort=density&per_page=20").json()["features"]["rows"]
    densities = [r["density"] for r in rows]
    assert densities == sorted(densities, reverse=True) and len(rows) == 20
    data = client.get(f"{sae_url}.json?dmin=0.01&dmax=0.2&per_page=500").json()
    assert data["features"]["rows"] and all(0.01 <= r["density"] <= 0.2 for r in data["features"]["rows"])
    label = data["features"]["rows"][0]["label"]
    word = max(label.replace("·", " ").split(), key=len)
    hits = client.get(f"{sae_url}.json", params={"q": word}).json()["features"]["rows"]
    assert hits and all(word.lower() in r["label"].lower() for r in hits)
    page2 = client.get(f"{sae_url}.json?page=2&per_page=10").json()
    assert [r["feature"] for r in page2["features"]["rows"]] == list(range(10, 20))
    assert page2["urls"]["prev"].endswith("per_page=10") and "page=3" in page2["urls"]["next"]
    # plain HTML forms send empty fields: they mean "no bound", not an error
    assert client.get(f"{sae_url}?q=&dmin=&dmax=&sort=index&order=asc").status_code == 200


@pytest.mark.parametrize(
    "query, words",
    [
        ("page=0", "page"),
        ("sort=bogus", "sort"),
        ("per_page=9999", "per_page"),
        ("dmin=abc", "dmin"),
        ("dmin=0.5&dmax=0.1", "dmin"),
        ("dmax=2", "dmax"),
        ("order=up", "order"),
    ],
)
def test_sae_page_bad_parameters_are_422(client, sae_url, query, words):
    r = client.get(f"{sae_url}?{query}")
    assert r.status_code == 422 and is_full(r) and words in r.text and "Bad parameter" in r.text
    js = client.get(f"{sae_url}.json?{query}")
    assert js.status_code == 422 and words in js.json()["error"]


def test_unknown_model_sae_and_path_are_404s_that_say_what_exists(client, store_facts):
    r = client.get(f"/nope/{store_facts['sae_id']}")
    assert r.status_code == 404 and "nope" in r.text and f'href="/#{store_facts["model_id"]}"' in r.text
    r = client.get(f"/{store_facts['model_id']}/nosuch")
    assert r.status_code == 404 and "nosuch" in r.text
    assert all(sae_id in r.text for sae_id, _, _ in store_facts["saes"])
    js = client.get(f"/{store_facts['model_id']}/nosuch.json")
    assert js.status_code == 404 and {e["name"] for e in js.json()["exists"]} == {s[0] for s in store_facts["saes"]}
    r = client.get("/a/b/c/d")
    assert r.status_code == 404 and "/search" in r.text and store_facts["model_id"] in r.text


def test_feature_dashboard_full_partial_and_json(client, sae_url, store_facts):
    f = store_facts["live"]
    data = check_twins(client, f"{sae_url}/{f}", "Top activations")
    detail = data["detail"]
    assert detail["row"]["feature"] == f and detail["row"]["n_fired"] > 0
    assert detail["top"] and all(len(c["tokens"]) == len(c["acts"]) for c in detail["top"])
    top = detail["top"][0]
    assert top["acts"][top["pos"]] == pytest.approx(top["act"])
    assert detail["logits_pos"] and detail["logits_neg"] and detail["neighbors"]
    assert sum(detail["hist"]) == detail["row"]["n_fired"]
    assert data["urls"]["steer"] == f"/steer?sae_id={store_facts['sae_id']}&feature={f}"


def test_feature_page_shows_what_a_dashboard_needs(client, sae_url, store_facts):
    f, sae_id = store_facts["live"], store_facts["sae_id"]
    html = client.get(f"{sae_url}/{f}").text
    assert 'property="og:title"' in html and 'name="twitter:card"' in html and 'property="og:description"' in html
    assert f'href="/steer?sae_id={sae_id}&amp;feature={f}"' in html
    assert f'href="{sae_url}/{f - 1}"' in html or f == 0
    assert f'href="{sae_url}/{f + 1}"' in html
    assert "data-copy=" in html and "Copy link" in html
    assert 'class="t mx"' in html or 'class="t mx far"' in html  # the max token is marked
    assert "<svg" in html and "Logit effects" in html and "Nearest features" in html and "Interval samples" in html
    part = client.get(f"{sae_url}/{f}", headers=HX).text
    assert "<title>" in part and 'id="dashboard"' not in part  # the partial updates the title, not the shell


def test_feature_embed_is_a_bare_card(client, sae_url, store_facts):
    f = store_facts["live"]
    r = client.get(f"{sae_url}/{f}?embed=1")
    assert r.status_code == 200 and is_full(r) and 'class="embed"' in r.text
    assert '<header class="top">' not in r.text and "open in qscope" in r.text


def test_feature_prev_next_at_the_edges(client, sae_url, store_facts):
    first = client.get(f"{sae_url}/0.json").json()["urls"]
    assert first["prev"] is None and first["next"].endswith("/1")
    last = store_facts["d_sae"] - 1
    assert client.get(f"{sae_url}/{last}.json").json()["urls"]["next"] is None


def test_feature_404_and_422(client, sae_url, store_facts):
    d_sae = store_facts["d_sae"]
    for bad in (d_sae, 10**9, -1):
        r = client.get(f"{sae_url}/{bad}")
        assert r.status_code == 404 and f"0 to {d_sae - 1}" in r.text
    js = client.get(f"{sae_url}/{d_sae}.json")
    assert js.status_code == 404 and js.json()["error"].startswith(f"Feature {d_sae} is out of range")
    r = client.get(f"{sae_url}/abc")
    assert r.status_code == 404 and f"0 to {d_sae - 1}" in r.text
    assert client.get(f"{sae_url}/3?embed=maybe").status_code == 422


def test_random_feature_redirects_to_a_live_feature(client, sae_url, store_facts):
    r = client.get(f"/-/random/{store_facts['model_id']}/{store_facts['sae_id']}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith(f"{sae_url}/")
    feature = client.get(r.headers["location"] + ".json").json()["detail"]["row"]
    assert feature["n_fired"] > 0
    assert client.get(f"/-/random/{store_facts['model_id']}/nosuch", follow_redirects=False).status_code == 404
    # its .json twin leads to the feature's .json twin (the schema says it answers JSON)
    r = client.get(f"/-/random/{store_facts['model_id']}/{store_facts['sae_id']}.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.headers


def test_inspect_analyze_full_partial_and_json(client, store_facts):
    text = "def add(x, y):\n    return x + y\n"
    data = check_twins(client, "/inspect?" + urlencode({"text": text}), "Features × tokens")
    a = data["analysis"]
    assert a["model_id"] == store_facts["model_id"] and len(a["tokens"]) == len(a["per_token"]) > 3
    assert "".join(a["tokens"]) == text and a["ranked"][0] is False
    assert a["features"] and all(len(f["acts"]) == len(a["tokens"]) for f in a["features"])
    rels = [f["rel"] for f in a["features"]]
    assert rels == sorted(rels, reverse=True)
    html = client.get("/inspect", params={"text": text}).text
    assert 'class="tokpanel"' in html and 'data-pos="0"' in html and f"/{store_facts['model_id']}/" in html


def test_inspect_compare(client):
    params = {"mode": "compare", "a": "import os\n---\nimport sys", "b": "The cat sat on the mat."}
    data = client.get("/inspect.json", params=params).json()
    c = data["comparison"]
    assert len(c["texts_a"]) == 2 and len(c["texts_b"]) == 1 and c["features"]
    diffs = [abs(d["rel_diff"]) for d in c["features"]]
    assert diffs == sorted(diffs, reverse=True)
    assert "Features that differ most" in client.get("/inspect", params=params, headers=HX).text


def test_inspect_bounds_are_422(client):
    r = client.get("/inspect", params={"text": "x" * 401})
    assert r.status_code == 422 and "at most 400" in r.text
    r = client.get("/inspect.json", params={"text": " ".join(["word"] * 60)})
    assert r.status_code == 422 and "tokens" in r.json()["error"] and "at most 48" in r.json()["error"]
    r = client.get("/inspect", params={"mode": "compare", "a": "\n---\n".join("abcdefghij"), "b": "x"})
    assert r.status_code == 422 and "at most 8" in r.text
    assert client.get("/inspect?mode=other").status_code == 422
    assert client.get("/inspect?model_id=nope").status_code == 404


def test_static_files_are_served_pinned(client):
    r = client.get("/-/static/vendor/htmx-2.0.11.min.js")
    assert r.status_code == 200 and "htmx" in r.text[:2000]
    assert client.get("/-/static/vendor/htmx-2.0.11.LICENSE").status_code == 200
    assert client.get("/-/static/qscope.css").status_code == 200
    page = client.get("/").text
    assert "/-/static/vendor/htmx-2.0.11.min.js" in page and "https://" not in page


def test_serve_cli_rejects_a_missing_store(tmp_path):
    from typer.testing import CliRunner

    from qscope.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "no feature store" in result.output
