"""Steering in a real browser: from a feature's dashboard to /steer, both completions streamed side by side,
shared, and the shared link reopened with the same outputs (Debian's Chromium; screenshots in tests/artifacts/)."""

import pytest

from tests.helpers.browser import shot, sync_api

pytestmark = pytest.mark.slow

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
WATCH = """() => {
  window.__seen = [];
  const out = document.getElementById("out-default");
  new MutationObserver(() => window.__seen.push(out.querySelectorAll(".st").length))
    .observe(out, { childList: true });
}"""


def texts(pg) -> tuple[str, str]:
    return tuple(pg.locator(f"#out-{name}").inner_text() for name in ("default", "steered"))


def test_steer_from_a_feature_page_stream_share_and_reopen(page, server):  # noqa: F811
    expect = sync_api.expect
    page.goto(server + "/")
    page.locator("table.grid a", has_text=SAE).first.click()  # the SAE's page, under the harvest's model id
    page.goto(page.url.split("?")[0] + "/40")
    page.locator("a", has_text="Steer with this feature").click()
    page.wait_for_url("**/steer?**feature=40**")
    row = page.locator("#features .frow")
    expect(row).to_have_count(1)
    assert row.locator("[name=feature]").input_value() == "40" and row.locator("[name=sae_id]").input_value() == SAE

    page.fill("textarea[name=prompt]", "The cat sat on the")
    page.fill("input[name=max_new_tokens]", "16")
    page.fill("input[name=temperature]", "0")
    row.locator("[name=strength]").fill("12")
    page.evaluate(WATCH)
    page.locator("#run").click()
    expect(page.locator("#status")).to_have_text("done")
    for name in ("default", "steered"):
        tokens = page.locator(f"#out-{name} .st")
        assert tokens.count() >= 1 and "p=" in tokens.first.get_attribute("title")
    seen = page.evaluate("window.__seen")
    assert len(set(seen)) >= 2, f"the default completion arrived all at once: {seen}"  # streamed, not one reply
    default, steered = texts(page)
    assert default and steered and default != steered  # a strength of 12 x max changes a greedy completion
    shot(page, "09_steer")

    page.locator("#share").click()
    page.wait_for_url("**/steer/*")
    shared = page.url
    page.goto(server + "/")
    page.goto(shared)  # a fresh load: the saved run is rendered by the server
    expect(page.locator(".note", has_text="Saved run")).to_be_visible()
    assert texts(page) == (default, steered)
    assert page.locator("textarea[name=prompt]").input_value() == "The cat sat on the"
    shot(page, "10_steer_shared")
    assert page.problems == []
