"""Why this token? in a real browser (Debian's Chromium): click a generated token on the steer page, see the
features that drove it, suppress them and regenerate beside the original; the same from a shared run and from
/inspect; the permalink opens the panel as a page. Screenshots in tests/artifacts/."""

import json
import re
import urllib.request

import pytest

from tests.helpers.browser import shot, sync_api

pytestmark = pytest.mark.slow

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"


def steer_api(base: str, spec: dict) -> dict:
    req = urllib.request.Request(
        base + "/api/steer", data=json.dumps(spec).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_click_a_token_see_why_then_suppress_and_regenerate(page, server):  # noqa: F811
    expect = sync_api.expect
    page.goto(f"{server}/steer?sae_id={SAE}&feature=40")
    page.fill("textarea[name=prompt]", "The cat sat on the")
    page.fill("input[name=max_new_tokens]", "12")
    page.fill("input[name=temperature]", "0")
    page.locator("#run").click()
    expect(page.locator("#status")).to_have_text("done", timeout=60_000)  # a shared, loaded CPU
    default_text = page.locator("#out-default").inner_text()

    token = page.locator("#out-default .st[data-i='4']")
    token.click()
    panel = page.locator("#why .why")
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_contain_text("at token")
    rows = panel.locator("table.whyfeat").first.locator("tbody tr")
    assert rows.count() >= 1 and rows.first.locator("a.flink").get_attribute("href").count("/") == 3
    assert panel.locator("table.whysae tbody tr").count() == 2 and panel.locator("table.whyheat td.c").count() > 0
    picked = [
        (c.get_attribute("data-sae"), int(c.get_attribute("data-feature")))
        for c in panel.locator(".why-pick:checked").all()
    ]
    assert 1 <= len(picked) <= 3
    data = json.loads(panel.locator(".why-data").text_content())
    shot(page, "11_why_panel")

    panel.locator(".why-scope").select_option("from")
    panel.locator(".why-run").click()
    expect(panel.locator(".why-status")).to_contain_text("done", timeout=120_000)
    original, suppressed = (panel.locator(f".why-{c}").inner_text() for c in ("original", "suppressed"))
    assert original == default_text
    # the same run built by hand: the default prompt and settings, the ticked features ablated from the position
    start = data["from_position"]
    ablate = [{"sae_id": s, "feature": f, "mode": "subtract", "from_position": start} for s, f in picked]
    by_hand = steer_api(
        server, {"prompt": "The cat sat on the", "temperature": 0, "max_new_tokens": 12, "features": ablate}
    )
    assert suppressed == by_hand["steered"]["text"] and original == by_hand["default"]["text"]
    before = "".join(page.locator("#out-default .st").nth(i).inner_text() for i in range(4))
    assert suppressed.startswith(before)  # ablated from where token 4 was predicted: tokens 0-3 are as they were
    expect(panel.locator(".why-ran")).to_have_text(f"(subtract, from {panel.get_attribute('data-from-label')} on)")
    # counted as the clicked token is (data-i 4 is "token 4 of the default completion"), never from the prompt
    expect(panel.locator("h2")).to_contain_text("at token 4 of the default completion?")
    status = panel.locator(".why-status").inner_text()
    parts = re.search(r"parts from the original at token (\d+) of the default completion", status)
    assert parts or "the same tokens" in status, status
    if parts:
        k = int(parts.group(1))
        assert k >= 4 and panel.locator(".why-original .st").nth(k).get_attribute("class").endswith("why-diverge")
    shot(page, "12_why_suppressed")

    # the stronger rule, by name: the panel says it ran, and it is the steering API's ablate
    panel.locator(".why-mode").select_option("ablate")
    panel.locator(".why-run").click()
    expect(panel.locator(".why-ran")).to_have_text(f"(ablate, from {panel.get_attribute('data-from-label')} on)")
    expect(panel.locator(".why-status")).to_contain_text("done", timeout=120_000)
    strong = steer_api(
        server,
        {
            "prompt": "The cat sat on the",
            "temperature": 0,
            "max_new_tokens": 12,
            "features": [{**f, "mode": "ablate"} for f in ablate],
        },
    )
    assert panel.locator(".why-suppressed").inner_text() == strong["steered"]["text"]

    # the steered side, then a shared run
    page.locator("#out-steered .st[data-i='2']").click()
    expect(panel.locator("h2")).to_contain_text("at token 2 of the steered completion")
    steered = panel.locator(f"tr:has(.why-pick[data-sae='{SAE}'][data-feature='40']) .badge.steered")
    assert steered.count() in (0, 1)  # the steered feature, where it is listed, says so
    assert panel.locator(".badge.steered").count() == steered.count()
    page.locator("#share").click()
    page.wait_for_url("**/steer/*")
    page.goto(page.url)
    page.locator("#out-steered .st[data-i='1']").click()
    expect(page.locator("#why .why")).to_be_visible()

    # the permalink opens the panel as a page of its own
    href = page.locator("#why .why a.btn", has_text="Permalink").get_attribute("href")
    page.goto(server + href)
    expect(page.locator("h1")).to_have_text("Why this token?")
    expect(page.locator("#why .why table.whyfeat").first).to_be_visible()
    assert page.problems == []


def test_inspect_token_opens_the_panel_and_says_why_not(page, server):  # noqa: F811
    expect = sync_api.expect
    page.goto(server + "/inspect?text=def add(x, y):%0A    return x %2B y%0A")
    page.locator(".strip .tok[data-pos='5']").click()
    panel = page.locator("#why .why")
    expect(panel).to_be_visible()
    expect(panel.locator("table.whyfeat tbody tr").first).to_be_visible()
    # another target, asked from the panel: the panel alone reloads
    panel.locator("form.why-target input[name=target]").fill("#1")
    panel.locator("form.why-target button").click()
    expect(page.locator("#why .why h2")).to_contain_text("at token 5")
    assert "/inspect" in page.url
    shot(page, "13_why_inspect")
    page.locator(".strip .tok[data-pos='0']").click()
    expect(page.locator("#why .error")).to_contain_text("pos 0 is the first token")
    # the 422 of that request (as a response and as Chromium's console line) and nothing else
    assert page.problems and all("422" in p and ("pos=0" in p or p.startswith("console:")) for p in page.problems)
