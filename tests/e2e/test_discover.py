"""Discover in a real browser (Debian's Chromium) on `qscope serve` of the tiny default: paste two example sets,
watch the job, read the ranked features, save a detector from them, reopen its link and run it; then a footprint
comparison of a demo set. Screenshots in tests/artifacts/."""

import pytest

from tests.helpers.browser import shot, sync_api

pytestmark = pytest.mark.slow

CODE = [
    "def parse(self, text, strict=False):",
    "return self._cache[key]",
    "for index, item in enumerate(items):",
    "if not isinstance(value, (int, float)):",
    "result = os.path.join(base, name)",
    "raise ValueError('bad value: %r' % (value,))",
    "self.buffer = bytearray(size)",
    "with open(path, 'rb') as fh:",
    "except KeyError as exc:",
    "elif token.type == NAME and token.string in kwlist:",
    "yield from self._iter_items(node.children)",
    "args = parser.parse_args(argv[1:])",
]
PROSE = [
    "The cat sat quietly by the window all afternoon.",
    "Nothing succeeds like the appearance of success.",
    "We walked along the river until the sun went down.",
    "She said the meeting would start a little later than planned.",
    "In war it is not men, but the man who counts.",
    "Reality must take precedence over public relations.",
    "The old house at the end of the road was empty for years.",
    "He who hates vices hates mankind.",
    "A long time ago the town had only one bakery.",
    "The children laughed at the clown in the park.",
    "Good salesmen and good repairmen will never go hungry.",
    "Every morning the baker opened his shop at six.",
]


def test_paste_rank_save_detector_reopen(page, server):  # noqa: F811
    expect = sync_api.expect
    page.goto(server + "/")
    page.locator("header.top nav a", has_text="Discover").click()
    expect(page.locator("h1")).to_have_text("Discover features from examples")
    page.fill("textarea[name=a]", "\n".join(CODE))
    page.fill("textarea[name=b]", "\n".join(PROSE))
    page.fill("input[name=name_a]", "code")
    page.fill("input[name=name_b]", "prose")
    page.locator("#run").click()
    page.wait_for_url("**/discover/*")
    rows = page.locator("table.ranked[data-side=a] tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 3
    assert page.locator("table.ranked svg.strip").count() >= 3
    assert page.locator(".stats", has_text="random features").count() == 1
    shot(page, "11_discover_ranked")
    discovery_url = page.url

    for i in range(2):
        rows.nth(i).locator("input.pick").check()
    page.locator("button", has_text="Save rule: any ticked fires").click()
    page.wait_for_url("**/detectors/*")
    detector_url = page.url
    expect(page.locator("h1")).to_contain_text("code vs prose")
    f1 = page.locator("#test-f1").inner_text()
    tp, fn, fp = (int(page.locator(f"#{k}").inner_text()) for k in ("tp", "fn", "fp"))
    assert tp + fn >= 1 and tp + fn + fp >= 1
    shot(page, "12_detector")

    page.goto(server + "/")
    page.goto(detector_url)  # the permalink, reopened
    expect(page.locator("#test-f1")).to_have_text(f1)
    page.fill("#try textarea", "for key, value in sorted(mapping.items()):\nThe dog slept in the sun.")
    page.locator("#detect").click()
    expect(page.locator("#detected .detected")).to_have_count(2)
    shot(page, "13_detect")
    for width in (1280, 390):  # the numbers come with a sentence saying what they mean, at both widths
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(discovery_url)
        expect(page.locator("table.ranked").first).to_be_visible()
        reading = page.locator("#reading")
        expect(reading).to_contain_text("95th percentile of")
        box = reading.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
        shot(page, f"11_discover_reading_{width}")
    page.set_viewport_size({"width": 1360, "height": 900})
    page.goto(server + "/detectors")
    expect(page.locator("table.grid a", has_text="code vs prose").first).to_be_visible()
    assert page.problems == []


def test_footprint_comparison_of_a_demo_set(page, server):  # noqa: F811
    expect = sync_api.expect
    page.goto(server + "/footprints")
    page.locator(".demos a").first.click()
    page.wait_for_url("**/footprints?demo=**")
    assert page.locator("textarea[name=a]").input_value().count("\n") >= 10
    page.locator("#run").click()
    page.wait_for_url("**/footprints/*")
    expect(page.locator("svg.overlap")).to_be_visible()
    overlap = float(page.locator("#overlap").inner_text())
    assert 0 <= overlap < 1
    shot(page, "14_footprint")
    assert page.problems == []


def test_one_click_demo_detector(page, server):  # noqa: F811
    """From the default, without bringing anything: a detector built from a demo set, with its measured F1."""
    expect = sync_api.expect
    page.goto(server + "/detectors")
    page.locator("#demo-detector button", has_text="Python code vs English prose").click()
    page.wait_for_url("**/detectors/*")
    expect(page.locator("h1")).to_contain_text("Python code vs English prose")
    assert float(page.locator("#test-f1").inner_text()) > 0.8
    shot(page, "15_demo_detector")
    assert page.problems == []
