"""End to end in a real browser: `qscope serve` on the harvested tiny default, driven by Debian's Chromium
through home -> SAE -> feature -> search -> inspect, checking what a person sees. Screenshots go to
tests/artifacts/ (gitignored). Playwright drives the system Chromium; it never downloads a browser."""

import pytest

from tests.helpers.browser import needs_chromium, shot, sync_api  # noqa: F401

pytestmark = [pytest.mark.slow, needs_chromium]


def test_home_sae_feature_search_inspect(page, server):
    expect = sync_api.expect
    page.goto(server + "/")
    expect(page.locator("h1")).to_have_text("Models and SAEs")
    sae_link = page.locator("table.grid a").first
    sae_id = sae_link.inner_text()
    shot(page, "01_home")

    # SAE: the feature table, then re-sorted by density through htmx (URL pushed)
    sae_link.click()
    expect(page.locator("h1")).to_have_text(sae_id)
    expect(page.locator("table.features tbody tr")).to_have_count(50)
    expect(page.locator("svg.plot")).to_be_visible()
    page.select_option("select[name=sort]", "density")
    page.wait_for_url("**sort=density**")
    expect(page.locator("table.features tbody tr")).to_have_count(50)
    first, second = (page.locator("table.features td.dens .dval").nth(i).inner_text() for i in (0, 1))
    assert float(first.rstrip("%")) >= float(second.rstrip("%"))
    shot(page, "02_sae")

    # feature dashboard: shaded contexts, the max token boxed, values on hover, next via htmx
    page.locator("table.features tbody tr td.label a").first.click()
    expect(page.locator("h2", has_text="Top activations")).to_be_visible()
    feature = int(page.locator("h1 .fid").inner_text().lstrip("#"))
    assert page.locator(".ctx .t.mx").count() > 0
    assert any(ch.isdigit() for ch in page.locator(".ctx .t.mx").first.get_attribute("title"))
    assert page.locator('meta[property="og:title"]').get_attribute("content").startswith(sae_id)
    expect(page.locator("a", has_text="Steer with this feature")).to_have_attribute(
        "href", f"/steer?sae_id={sae_id}&feature={feature}"
    )
    row = page.locator(".ctx").first
    row.click()
    expect(row).to_have_class("ctx open")
    shot(page, "03_feature")
    page.locator("a[rel=next]").click()
    page.wait_for_url(f"**/{feature + 1}")
    expect(page.locator("h1 .fid")).to_have_text(f"#{feature + 1}")
    assert page.title().startswith(f"#{feature + 1}")

    # search from the header box: results of every kind, labelled
    page.fill("form.quick input[name=q]", "return")
    page.press("form.quick input[name=q]", "Enter")
    page.wait_for_url("**/search?q=return")
    expect(page.locator("table.results tbody tr").first).to_be_visible()
    for kind in ("semantic", "text", "fires"):
        assert page.locator(f"table.results .badge.{kind}").count() > 0, kind
    shot(page, "04_search")

    # inspect: run the model on a text, click a token for its features, follow one to its dashboard
    page.locator("header.top nav a", has_text="Inspect").click()
    page.fill("textarea[name=text]", "def add(x, y):\n    return x + y\n")
    page.locator("button", has_text="Run").click()
    page.wait_for_url("**/inspect?**text=**")
    expect(page.locator(".strip .tok").first).to_be_visible()
    page.locator(".strip .tok[data-pos='5']").click()
    panel = page.locator("#tok-5")
    expect(panel).to_be_visible()
    expect(page.locator("table.heat tbody tr").first).to_be_visible()
    shot(page, "05_inspect")
    panel.locator("a.flink").first.click()
    expect(page.locator("h2", has_text="Top activations")).to_be_visible()

    # compare mode
    page.goto(server + "/inspect?mode=compare")
    page.fill("textarea[name=a]", "import os\n---\nimport sys")
    page.fill("textarea[name=b]", "The cat sat on the mat.")
    page.locator("button", has_text="Run").click()
    expect(page.locator("table.compare tbody tr").first).to_be_visible()
    shot(page, "06_compare")
    assert page.problems == []


def test_not_found_and_embed(page, server):
    page.goto(server + "/nope/nothing")
    assert "No model 'nope'" in page.locator("h1").inner_text()
    shot(page, "07_not_found")
    page.goto(server + "/.json")
    import json

    model = json.loads(page.locator("body").inner_text())["models"][0]
    sae = model["saes"][0]["sae"]
    page.goto(f"{server}/{model['model_id']}/{sae['sae_id']}/1?embed=1")
    expect = sync_api.expect
    expect(page.locator("body.embed .card")).to_be_visible()
    assert page.locator("header.top").count() == 0
    shot(page, "08_embed")


def test_sae_filter_keeps_the_url_the_view_on_the_screen(page, server):
    """Typing in the label filter puts it in the address (one history entry for the typing, not one a keystroke);
    back shows the form as its URL says, so the next change asks for what is on the screen plus that change."""
    expect = sync_api.expect
    page.problems.clear()  # the 404 the test before this one asks for on purpose
    import json
    import urllib.request

    model = json.loads(urllib.request.urlopen(server + "/.json").read())["models"][0]
    sae_url = f"{server}/{model['model_id']}/{model['saes'][0]['sae']['sae_id']}"
    page.goto(sae_url)
    page.select_option("form.filters select[name=sort]", "density")
    page.wait_for_url("**?sort=density")
    before = page.evaluate("history.length")
    page.locator("form.filters input[name=q]").press_sequentially("the", delay=400)  # past the 300 ms debounce
    page.wait_for_url("**?q=the&sort=density")
    expect(page.locator("table.features tbody tr").first).to_be_visible()
    assert page.evaluate("history.length") == before + 1  # the typing added one entry, not three
    page.locator("form.filters select[name=order]").focus()  # leaving the field: no entry of its own
    page.wait_for_timeout(500)
    assert page.evaluate("history.length") == before + 1

    page.go_back()
    page.wait_for_url("**?sort=density")
    expect(page.locator("form.filters select[name=sort]")).to_have_value("density")
    expect(page.locator("form.filters input[name=q]")).to_have_value("")
    page.select_option("form.filters select[name=order]", "asc")  # the next change: the view shown, plus it
    page.wait_for_url("**?sort=density&order=asc")
    dens = page.locator("table.features td.dens .dval")
    first, second = (float(dens.nth(i).inner_text().rstrip("%")) for i in (0, 1))
    assert first <= second
    assert page.problems == []
