"""What a newcomer meets on the pages (TestClient): readable split characters, errors in words next to their
cause, steering that says what a feature can do, numbers that explain themselves, and the small things (the
`.json` twin of /steer, GET /api/steer/{id}, the header search box, the CLI's help).

Most tests use the hand-made store of tests/helpers/stores.py (no model needed); the ones that run the model
use the tiny default."""

import duckdb
import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.search.searcher import of_harvest_max
from qscope.web import create_app
from qscope.web.render import of_max
from tests.helpers.stores import DEAD, MODEL_ID, SAE_IDS, write_newcomer_store

HX = {"HX-Request": "true"}
REPLACEMENT = "\ufffd"
SAE = SAE_IDS[0]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    out = write_newcomer_store(tmp_path_factory.mktemp("wide") / "wide.duckdb")
    root = tmp_path_factory.mktemp("wide-app")
    settings = Settings(device="cpu", cache_dir=root / "cache", app_db_url=f"sqlite:///{root / 'app.db'}")
    with TestClient(create_app([out], settings, warm_search=False)) as c:
        yield c


def test_feature_page_shows_split_characters_whole_and_long_tokens_whole_on_hover(client):
    html = client.get(f"/{MODEL_ID}/{SAE}/0").text
    assert REPLACEMENT not in html
    toks = html[html.index('class="toks"') : html.index("Interval samples") if "Interval samples" in html else None]
    assert ">日</span>" in toks and ">😀</span>" in toks  # on the token completing each character
    assert 'class="t part"' in toks  # the token holding the first bytes: a thin mark, its bytes on hover
    assert "&#39;\\x97\\xa5&#39;" not in html and "&lt;0x97&gt;&lt;0xA5&gt;" in html  # bytes as <0xNN>
    assert "&lt;0xE2&gt;" in toks  # a byte that completes nothing
    assert f'title="&#39;+{"-" * 60}+&#39;"' in html  # the long logit token: cut on the page, whole on hover
    assert "日" in client.get(f"/{MODEL_ID}/{SAE}/0.json").json()["detail"]["row"]["label"]


def test_neighbors_are_grouped_by_sae_under_headings(client):
    html = client.get(f"/{MODEL_ID}/{SAE}/0").text
    nearest = html[html.index("Nearest features") : html.index('class="card share"')]
    own, other = nearest.index("this SAE (layer 0)"), nearest.index(">layer 1<")
    assert own < nearest.index("0.92") < nearest.index("0.26") < other < nearest.index("0.81")
    groups = client.get(f"/{MODEL_ID}/{SAE}/0.json").json()["neighbor_groups"]
    assert [g["heading"] for g in groups] == ["this SAE (layer 0)", "layer 1"]


def test_a_dead_feature_offers_no_steering(client):
    html = client.get(f"/{MODEL_ID}/{SAE}/{DEAD}").text
    assert "Steer with this feature" not in html and "never fired" in html
    info = client.get(f"/api/steer/feature/{SAE}/{DEAD}").json()
    assert info["dead"] is True and info["max_act"] == 0
    live = client.get(f"/api/steer/feature/{SAE}/0").json()
    assert live["dead"] is False and live["max_act"] == 4.0 and live["url"] == f"/{MODEL_ID}/{SAE}/0"
    r = client.get(f"/api/steer/feature/{SAE}/99")
    assert r.status_code == 404 and "out of range" in r.json()["error"]
    page = client.get(f"/steer?sae_id={SAE}&feature={DEAD}").text
    assert '"dead": true' in page  # the page knows before any request: add and clamp are not offered


def test_steer_has_a_json_twin_and_api_ids_are_not_feature_pages(client):
    r = client.get("/steer.json")
    assert r.status_code == 200 and r.json()["features"] == [] and "prompt" in r.json()
    r = client.get("/api/steer/some-run-id")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert "No saved steering run" in r.json()["error"]  # not "No model 'api'"


def test_steer_page_is_in_the_top_navigation_and_share_starts_disabled(client):
    home = client.get("/").text
    assert '<a href="/steer">Steer</a>' in home
    page = client.get("/steer").text
    share = page[page.index('id="share"') - 40 : page.index('id="share"') + 120]
    assert "disabled" in share and "Run first" in share


def test_an_htmx_request_that_fails_gets_the_error_alone_in_words(client):
    r = client.get("/inspect", params={"text": "x" * 4001}, headers=HX)
    assert r.status_code == 422
    assert "<html" not in r.text and 'class="errbox error"' in r.text
    assert "4,001 characters long; this server runs at most 4,000" in r.text
    r = client.get(f"/{MODEL_ID}/{SAE}", params={"dmin": "0.5", "dmax": "0.1"}, headers=HX)
    assert r.status_code == 422 and 'class="errbox error"' in r.text and "dmin" in r.text
    full = client.get("/inspect", params={"text": "x" * 4001})
    assert full.status_code == 422 and "<html" in full.text  # a plain load still gets the whole error page


def test_a_long_query_still_runs_the_kinds_that_can(client):
    q = "日本語 " + "word " * 1000
    r = client.get("/search.json", params={"q": q, "kind": ["text", "fires"]})
    assert r.status_code == 200
    notes = r.json()["notes"]
    assert len(notes) == 1 and notes[0].startswith("Running the model on your query did not run")
    assert "日" in client.get("/search.json", params={"q": "日", "kind": "text"}).json()["hits"][0]["row"]["label"]


def test_header_search_box_keeps_the_query(client):
    html = client.get("/search", params={"q": "box rule", "kind": "text"}).text
    header = html[html.index('<form class="quick"') : html.index("</form>")]
    assert 'value="box rule"' in header
    header = client.get("/").text
    assert 'value=""' in header[header.index('<form class="quick"') :]


def test_token_counts_say_why_they_differ(client):
    html = client.get("/").text
    assert "tokens ranked" in html and "tokens read" in html
    assert "first token of each window" in html


def test_activations_above_the_harvested_max_are_said_as_such():
    assert of_max(0.62) == "62%"
    above = str(of_max(1.16))
    assert "116% ▲" in above and "above the largest activation in the harvest" in above
    assert of_harvest_max(0.5) == "50% of the largest in the harvest"
    assert "1.16x the largest in the harvest" in of_harvest_max(1.16)


def test_cli_help_shows_no_type_on_flags_and_bench_serve_lists_its_options(capsys):
    from typer.testing import CliRunner

    from qscope.cli import cli

    out = CliRunner().invoke(cli, ["build-demo", "--help"]).output
    assert "--tiny" in out and "<bool>" not in out and "<path>" in out
    out = CliRunner().invoke(cli, ["harvest", "--help"]).output
    assert "--dedup" in out and "--model-id" in out and "<bool>" not in out
    result = CliRunner().invoke(cli, ["bench", "serve", "--help"])
    assert "usage: qscope bench serve" in result.output and "--features" in result.output


@pytest.fixture(scope="module")
def tiny_client(tiny_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-app")
    settings = Settings(
        device="cpu", cache_dir=root / "cache", app_db_url=f"sqlite:///{root / 'app.db'}", rate_steer_per_min=0
    )
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c


def test_steering_a_dead_feature_with_add_is_refused_in_words(tiny_client, tiny_db):
    with duckdb.connect(str(tiny_db), read_only=True) as con:
        sae_id, feature = con.execute(
            "SELECT sae_id, min(feature) FROM features WHERE n_fired = 0 GROUP BY sae_id ORDER BY sae_id LIMIT 1"
        ).fetchone()
    spec = {"prompt": "The cat", "max_new_tokens": 2, "features": [{"sae_id": sae_id, "feature": feature}]}
    r = tiny_client.post("/api/steer", json=spec)
    assert r.status_code == 422 and "never fired in the harvest" in r.json()["error"]
    spec["features"][0]["mode"] = "ablate"
    assert tiny_client.post("/api/steer", json=spec).status_code == 200


def test_a_query_too_long_for_the_model_still_gets_text_results(tiny_client):
    q = "return " * 700  # 4,900 characters: over the model's limit, fine for text search
    assert tiny_client.app.state.searcher.wait_ready(600)  # the in-memory text index (words, not substrings)
    data = tiny_client.get("/search.json", params={"q": q, "kind": ["text", "fires"]}).json()
    assert data["hits"] and all(f["kind"] == "text" for h in data["hits"] for f in h["found"])
    assert "did not run" in data["notes"][0] and "at most 4,000" in data["notes"][0]


def test_steered_tokens_carry_their_value_and_pieces_that_join_to_the_text(tiny_client):
    spec = {"prompt": "日本語 and 😀", "max_new_tokens": 6, "temperature": 0}
    body = tiny_client.post("/api/steer", json=spec).json()
    for name in ("default", "steered"):
        c = body[name]
        assert c["text"] == "".join(t["text"] for t in c["tokens"]) and REPLACEMENT not in c["text"]
        assert all(t["value"] for t in c["tokens"] if t["text"])


def test_home_starts_a_newcomer_with_examples_that_work_on_what_is_served(tiny_client):
    """The home page's "Start here": one link per thing qscope does, each picked from the store when asked (a
    live feature, a search word that finds something) and each answering 200; the API docs and /v1 linked."""
    import re

    html = tiny_client.get("/").text
    assert html.index('id="start"') < html.index("<h1>Models and SAEs</h1>")
    start = html[html.index('id="start"') : html.index("</section>", html.index('id="start"'))]
    links = dict(
        (name, href.replace("&amp;", "&")) for href, name in re.findall(r'<a href="([^"]+)"><b>([^<]+)</b>', start)
    )
    assert list(links) == ["Browse", "Search", "Steer", "Evaluate", "Discover", "Fix", "Why this token?"]
    for name, href in links.items():
        r = tiny_client.get(href)
        assert r.status_code == 200, (name, href, r.text[:300])
    feature = tiny_client.get(links["Browse"] + ".json")
    assert feature.json()["detail"]["row"]["n_fired"] > 0  # a live feature, not a fixed index
    assert tiny_client.app.state.searcher.wait_ready(600)
    q = links["Search"].split("q=")[1]
    assert tiny_client.get("/search.json", params={"q": q, "kind": ["text"]}).json()["hits"]
    assert 'data-field="prompt">Once upon a time</textarea>' in tiny_client.get(links["Steer"]).text  # ready to run
    assert 'href="/-/docs"' in start and 'href="/v1/models"' in start and "OpenAI-compatible" in start
    assert tiny_client.get("/-/docs").status_code == 200 and tiny_client.get("/v1/models").json()["data"]


@pytest.mark.parametrize(
    "path", ["/", "/detectors", "/discover", "/fix", "/footprints", "/recipes", "/steer-eval", "/steer"]
)
def test_tab_titles_are_words_not_markup(tiny_client, path):
    import html as html_lib
    import re

    title = html_lib.unescape(re.search(r"<title>(.*?)</title>", tiny_client.get(path).text, re.S).group(1))
    assert "<" not in title and "qscope" in title, title
