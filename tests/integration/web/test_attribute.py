"""/attribute (page, partial, .json twin) and POST /api/attribute on the tiny default store (TestClient): texts,
steering runs (both sides, recent and shared), suppression, and every bad input a 422 that says what to change."""

import re

import pytest

from tests.helpers.apps import app_client, app_settings

SAE0, SAE1 = "SAE-Res-mini-qwen-W512-L0_16__layer0", "SAE-Res-mini-qwen-W512-L0_16__layer1"
TEXT = "The cat sat on the mat because it was warm, and the dog slept by the door."


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory, one_torch_thread):
    settings = app_settings(
        tmp_path_factory.mktemp("app"),
        steer_max_new_tokens=16,
        steer_max_features=4,
        rate_steer_per_min=0,
        rate_inspect_per_min=0,
        attribute_max_tokens=64,
    )
    with app_client([tiny_db], settings) as c:
        yield c


def token_ids(client, text):
    live = client.app.state.live
    lm, _ = live.get(next(iter(live.models))).load()
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_api_attributes_a_token_of_a_text(client):
    ids = token_ids(client, TEXT)
    r = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "top": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    why = body["why"]
    assert why["pos"] == 6 and why["at"] == 5 and why["target"]["id"] == ids[6] and len(why["tokens"]) == 7
    assert [s["sae_id"] for s in why["saes"]] == [SAE0, SAE1]
    for s in why["saes"]:
        assert len(s["strip"]) == 6 and s["total"] == pytest.approx(s["features"] + s["error"] + s["bias"])
    attrs = [f["attribution"] for f in why["features"]]
    assert 0 < len(attrs) <= 5 and attrs == sorted(attrs, reverse=True) and attrs[-1] > 0
    assert all(f["attribution"] < 0 for f in why["against"])
    top = why["features"][0]
    assert top["positions"] and all(0 <= p["pos"] <= 5 for p in top["positions"])
    assert sum(p["attr"] for p in top["positions"]) == pytest.approx(top["attribution"], rel=0.3)
    ablated = [f for f in body["suppress"]["features"] if f["mode"] == "subtract"]  # the default rule
    assert body["suppress_mode"] == "subtract" and body["ablated"] == len(ablated) == 3
    assert {f["from_position"] for f in ablated} == {5}
    assert body["suppress"]["prompt"] and body["explained"] == 0 and body["url"].startswith("/attribute?")


def test_named_target_and_contrast(client):
    plain = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "target": " was"}).json()["why"]
    other = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "target": "#1"}).json()["why"]
    both = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "target": " was", "contrast": "#1"}).json()
    assert plain["target"]["text"] == " was" and other["target"]["id"] == 1
    assert both["why"]["value"] == pytest.approx(plain["value"] - other["value"], abs=1e-4)
    for s, a, b in zip(both["why"]["saes"], plain["saes"], other["saes"], strict=True):
        assert s["features"] == pytest.approx(a["features"] - b["features"], abs=1e-4)


def test_page_partial_and_json_twin(client):
    url = f"/attribute?text={TEXT}&pos=6"
    page = client.get(url)
    assert page.status_code == 200 and "<html" in page.text and "Suppress and regenerate" in page.text
    assert page.headers["vary"] == "HX-Request"
    part = client.get(url + "&panel=true", headers={"HX-Request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and 'class="why-data"' in part.text
    assert "why-target" in part.text  # the panel can ask again with another target
    twin = client.get(f"/attribute.json?text={TEXT}&pos=6").json()
    assert twin["result"]["why"]["target"]["id"] == token_ids(client, TEXT)[6]
    empty = client.get("/attribute")
    assert empty.status_code == 200 and "Give a text" in empty.text
    assert client.get("/attribute.json").json()["result"] is None
    schema = client.get("/-/openapi.json").json()
    assert "/api/attribute" in schema["paths"] and "AttributeRequest" in schema["components"]["schemas"]


def test_characters_split_over_tokens_read_as_characters(client):
    """A CJK character or an emoji split over byte tokens is shown whole (on the token completing it in the strip,
    on every part in the chips), never as U+FFFD or as its bytes."""
    text = "I like emoji 😀 and 日本語 text"
    ids = token_ids(client, text)
    assert len(ids) > len(text.split()) + 6, "the tiny tokenizer splits these characters into bytes"
    last = len(ids) - 1
    why = client.post("/api/attribute", json={"text": text, "pos": last, "top": 20}).json()["why"]
    assert "".join(why["shown"]) == text and why["shown"] != why["tokens"]
    split = [i for i, (t, c) in enumerate(zip(why["tokens"], why["chars"], strict=True)) if t != c]
    assert split and all(why["chars"][i] in ("😀", "日", "本", "語") for i in split)
    assert all("<0x" not in p["text"] for f in why["features"] + why["against"] for p in f["positions"])
    part = client.get(f"/attribute?text={text}&pos={last}&panel=true", headers={"HX-Request": "true"}).text
    head = part[part.index('<table class="heat whyheat">') : part.index("</thead>")]
    shown = re.sub(r"<[^>]*>", "", head)  # the strip's visible text (each token's own bytes stay on hover)
    assert "😀" in shown and "日" in shown and "語" in shown and "&lt;0x" not in shown
    assert "\ufffd" not in part and 'title="7: &#39;&lt;0x' in head


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"pos": 0}, "pos 0 is the first token"),
        ({"pos": 99}, "pos 99 is outside the text: it has 29 tokens; give 1..29"),
        ({"pos": 3, "target": "catapult"}, "encodes to"),
        ({"pos": 3, "target": "#99999"}, "token id 99999 is not in the vocabulary"),
        ({"pos": 3, "contrast": "#1", "target": "#1"}, "contrast is the target"),
        ({"pos": 3, "sae_id": ["nope"]}, "has no SAE 'nope'"),
        ({"pos": 3, "text": "word " * 100}, "at most 64"),
        ({"pos": -1}, "pos"),
        ({"pos": 3, "top": 0}, "top"),
    ],
)
def test_bad_input_is_a_422_that_says_why(client, params, says):
    body = {"text": TEXT, **params}
    r = client.post("/api/attribute", json=body)
    assert r.status_code == 422, r.text
    assert says in r.json()["error"], r.json()["error"]
    page = client.get("/attribute", params={k: v for k, v in body.items()})
    assert page.status_code == 422 and says.split("'")[0] in page.text


def test_no_text_is_a_422_for_the_api_and_the_empty_form_for_the_page(client):
    r = client.post("/api/attribute", json={"text": "", "pos": 3})
    assert r.status_code == 422 and "give `text`" in r.json()["error"]
    assert client.get("/attribute?text=&pos=3").status_code == 200
    assert len(token_ids(client, TEXT)) == 29  # as the message above says


def test_multi_token_target_names_its_tokens(client):
    err = client.post("/api/attribute", json={"text": TEXT, "pos": 3, "target": "catapult"}).json()["error"]
    assert "tokens (" in err and "'" in err


def steer(client, **kw):
    spec = {
        "prompt": "The cat sat on the",
        "temperature": 0,
        "max_new_tokens": 10,
        "features": [{"sae_id": SAE1, "feature": 40, "mode": "add", "strength": 8}],
        **kw,
    }
    r = client.post("/api/steer", json=spec)
    assert r.status_code == 200, r.text
    return spec, r.json()


def test_a_runs_tokens_are_explained_as_they_were_generated(client):
    _, run = steer(client)
    for side in ("default", "steered"):
        for i in (0, 4):
            r = client.post("/api/attribute", json={"run": run["run"], "side": side, "pos": i})
            assert r.status_code == 200, r.text
            why, tok = r.json()["why"], run[side]["tokens"][i]
            assert why["target"]["id"] == tok["id"]
            # the steered side is replayed with its edits: the same probability as when it was generated
            assert why["target"]["prob"] == pytest.approx(tok["prob"], rel=1e-3), (side, i)
    assert client.post("/api/attribute", json={"run": run["run"], "pos": 11}).status_code == 422
    assert client.post("/api/attribute", json={"run": "nope", "pos": 1}).status_code == 404


def texts_of(client, spec):
    r = client.post("/api/steer", json=spec)
    assert r.status_code == 200, r.text
    return r.json()["default"]["text"], r.json()["steered"]["text"]


@pytest.mark.parametrize("side", ["default", "steered"])
def test_suppress_and_regenerate_is_a_subtract_run_built_by_hand(client, side):
    spec, run = steer(client)
    body = client.post("/api/attribute", json={"run": run["run"], "side": side, "pos": 3}).json()
    suppress, prompt_len = body["suppress"], len(token_ids(client, spec["prompt"]))
    assert body["from_position"] == prompt_len + 2 and body["original"] == run[side] | {"stopped": "length"}
    kept = spec["features"] if side == "steered" else []
    picked = [(f["sae_id"], f["feature"]) for f in body["why"]["features"][:3]]
    for start in (prompt_len + 2, 0):
        by_hand = {
            **spec,
            "features": kept
            + [{"sae_id": s, "feature": f, "mode": "subtract", "from_position": start} for s, f in picked],
        }
        ours = {
            **suppress,
            "features": suppress["features"][: len(suppress["features"]) - body["ablated"]]
            + [{**f, "from_position": start} for f in suppress["features"][-body["ablated"] :]],
        }
        default, suppressed = texts_of(client, ours)
        assert (default, suppressed) == texts_of(client, by_hand)
        assert default == run["default"]["text"]
        # ablation from the prediction position on leaves every token before the explained one as it was
        if start:
            before = "".join(t["text"] for t in run[side]["tokens"][:3])
            assert suppressed.startswith(before)


def test_a_shared_run_is_explained_by_its_id(client):
    _, run = steer(client)
    saved = client.post("/api/steer/share", json={"run": run["run"]}).json()
    r = client.get(f"/attribute.json?run={saved['id']}&side=steered&pos=2")
    assert r.status_code == 200 and r.json()["result"]["why"]["target"]["id"] == run["steered"]["tokens"][2]["id"]
    page = client.get(saved["url"])
    assert f'data-run="{saved["id"]}"' in page.text and 'data-i="0"' in page.text


def test_suppression_regenerates_from_the_very_token_ids_attributed(client):
    """Decoding 'x = (1,' + ' ' + ' ' and tokenizing it again gives one '  ' token: the suppression run must start
    from the ids the attribution ran on, so its original continues the context that was attributed."""
    text, pos = "x = (1,  2)", 7
    ids = token_ids(client, text)
    live = client.app.state.live
    tokenizer = live.get(next(iter(live.models))).load()[0].tokenizer
    assert token_ids(client, tokenizer.decode(ids[:pos])) != ids[:pos]  # the text holds the case
    body = client.post("/api/attribute", json={"text": text, "pos": pos}).json()
    suppress = body["suppress"]
    assert suppress["prompt_ids"] == ids[:pos] and body["from_position"] == pos - 1 == body["why"]["at"]
    r = client.post("/api/steer", json=suppress)
    assert r.status_code == 200, r.text
    # greedy from the attributed context: the first token is the model's top prediction where it was attributed
    assert r.json()["default"]["tokens"][0]["id"] == body["why"]["top"][0]["id"]
    assert r.json()["default"]["tokens"][0]["prob"] == pytest.approx(body["why"]["top"][0]["prob"], rel=1e-3)


def test_prompt_ids_out_of_the_vocabulary_are_a_422(client):
    r = client.post("/api/steer", json={"prompt_ids": [1, 10**6], "max_new_tokens": 2})
    assert r.status_code == 422 and "not in the vocabulary" in r.text


def test_the_suppression_rule_is_chosen_by_name_and_said(client):
    """subtract (what was attributed) by default, ablate when asked; the answer and the panel say which."""
    default = client.post("/api/attribute", json={"text": TEXT, "pos": 6}).json()
    strong = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "suppress_mode": "ablate"}).json()
    assert default["suppress_mode"] == "subtract" and strong["suppress_mode"] == "ablate"
    assert {f["mode"] for f in default["suppress"]["features"]} == {"subtract"}
    assert {f["mode"] for f in strong["suppress"]["features"]} == {"ablate"}
    texts_of(client, default["suppress"]), texts_of(client, strong["suppress"])  # each a spec /api/steer runs
    part = client.get(f"/attribute?text={TEXT}&pos=6&panel=true", headers={"HX-Request": "true"}).text
    assert '<option value="subtract" selected>' in part and "exactly the contribution the attribution" in part
    part = client.get(f"/attribute?text={TEXT}&pos=6&panel=true&suppress_mode=ablate", headers={"HX-Request": "true"})
    assert '<option value="ablate" selected>' in part.text
    bad = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "suppress_mode": "zero"})
    assert bad.status_code == 422


def test_a_repeated_sae_id_counts_once_and_the_count_is_bounded(client):
    once = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "top": 5, "sae_id": [SAE1, SAE0]})
    repeated = client.post(
        "/api/attribute", json={"text": TEXT, "pos": 6, "top": 5, "sae_id": [SAE1, SAE0] + [SAE1] * 1000}
    )
    assert once.status_code == repeated.status_code == 200, repeated.text
    assert len(repeated.content) == len(once.content)  # the answer does not grow with the repeats
    assert [s["sae_id"] for s in repeated.json()["why"]["saes"]] == [SAE1, SAE0]
    assert repeated.json()["url"].count("sae_id=") == 2  # kept in the order first given
    many = client.post("/api/attribute", json={"text": TEXT, "pos": 6, "sae_id": [f"sae{i}" for i in range(65)]})
    assert many.status_code == 422 and "at most 64" in many.json()["error"]


def test_tokens_are_numbered_one_way_and_the_steered_feature_is_marked(client):
    """A run's tokens are counted as the clicked token and the form count them, by their index in the completion
    (the prompt's as "prompt token i"); a text's by their position in it; the feature the run steered with is
    marked "steered" wherever it is listed."""
    _, run = steer(client)
    panel = client.get(f"/attribute?run={run['run']}&side=steered&pos=3&panel=true", headers={"HX-Request": "true"})
    assert panel.status_code == 200, panel.text
    html = panel.text
    assert re.search(r"</code> at token 3 of the steered completion\?</h2>", html)
    assert "Predicted at token 2 of the steered completion" in html
    assert 'data-first-token="0" data-token-of=" of the steered completion"' in html
    text = re.sub(r"<[^>]+>", "", html)
    assert not re.search(r"(position|token) (1[0-9]|[4-9])\b", text)  # no count over prompt + completion
    steered_row = re.search(rf'<tr><td><input[^>]*data-sae="{SAE1}" data-feature="40".*?</tr>', html, re.S)
    assert steered_row and 'class="badge steered"' in steered_row.group(0)
    assert html.count('class="badge steered"') == 1
    plain = client.get(f"/attribute?run={run['run']}&side=default&pos=3&panel=true", headers={"HX-Request": "true"})
    assert "at token 3 of the default completion?" in plain.text and 'class="badge steered"' not in plain.text

    page = client.get("/attribute", params={"text": TEXT, "pos": 6})
    assert re.search(r"</code> at token 6\?</h2>", page.text) and "Predicted at token 5 " in page.text
    assert "Token (position in the text)" in page.text and 'data-first-token="6" data-token-of=""' in page.text
    run_page = client.get(f"/attribute?run={run['run']}&side=steered&pos=3")
    assert "Token of the completion (from 0)" in run_page.text
