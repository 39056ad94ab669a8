"""Fix a behaviour in a real browser (Debian's Chromium) on `qscope serve` of the tiny default, at 1280 px and at
390 px: from the home page's Start here to /fix, load a demo set, run with small settings, follow the job, read
the ranked interventions, open the recipe. Neither page is wider than the window. Screenshots in tests/artifacts/."""

import pytest

from tests.e2e.test_phone import MEASURE
from tests.helpers.browser import shot, sync_api

pytestmark = pytest.mark.slow
SMALL = {"per_sae": "1", "max_prompts": "3", "seeds": "1", "random_controls": "1", "max_new_tokens": "6"}


def fits(page, width: int) -> None:
    got = page.evaluate(MEASURE)
    assert got["scroll"] <= got["width"] == width, f"{page.url} at {width}px: {got}"


@pytest.mark.parametrize("width", [1280, 390])
def test_fix_a_demo_behaviour_end_to_end(page, server, width):  # noqa: F811
    expect = sync_api.expect
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server + "/")
    page.locator("#start a", has_text="Fix").click()
    page.wait_for_url("**/fix?**")
    expect(page.locator("h1")).to_have_text("Fix a behaviour")
    page.goto(server + "/fix?n=12")  # the smallest demo sets: the demo buttons keep n
    page.locator(".demos a", has_text="Python code vs English prose").click()
    page.wait_for_url("**/fix?demo=code-vs-prose**")
    assert page.locator("textarea[name=a]").input_value().count("\n") == 11
    fits(page, width)
    page.locator("details.more summary").click()
    for name, value in SMALL.items():
        page.fill(f"input[name={name}]", value)
    page.fill("input[name=strengths]", "0, 2")
    page.locator("#run").click()
    page.wait_for_url("**/fix/*", timeout=300_000)
    rows = page.locator("#ranked-table tbody tr")
    expect(rows).to_have_count(3)  # one feature per SAE (2) and DiffMean
    expect(page.locator("#fix-sentence")).not_to_be_empty()
    recipe = page.locator("#recipe-link")
    expect(recipe).to_be_visible()
    fits(page, width)
    shot(page, f"16_fix_{width}")
    recipe.click()
    page.wait_for_url("**/recipes/*")
    expect(page.locator("#arms-compared")).to_be_visible()
    assert page.locator("#arms-compared tbody tr").count() >= 5  # the interventions and the controls
    fits(page, width)
    assert page.problems == []
