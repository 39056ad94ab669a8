"""Numbers with a reading (issue 29, item 9): the discovery's top feature beside its random-feature baseline gets a
sentence that says what the comparison means; a proportion's interval never prints "-0%"; the fluency chart puts
1x and the 2x threshold in view when the sweep reaches 182x (a log axis)."""

import re

from qscope.discover.ranking import Baseline, FeatureScore, Ranking, ShuffleControl, reading
from qscope.steer.evaluate.markdown import _pct
from qscope.steer.evaluate.result import Interval, PointSummary
from qscope.steer.evaluate.verdict import iv_text
from qscope.web.sweep_plots import PAD_B, PAD_T, H, interval_text, percent, ratio, sweep_chart


def ranking(top: float, p95: float, best: float) -> Ranking:
    score = FeatureScore("SAE__layer1", 2160, 0.9, top, 1.0, 0.8, 0.7, 2.0, 0.1, 1.9, 0.5, 0.8, 0.9, 0.1)
    shuffle = ShuffleControl(20, [], [], 0.55, 0.05, 0.06)
    return Ranking([score], [], Baseline(200, 0.52, p95, best), shuffle, 8192, 5000)


def test_a_discovery_says_what_its_top_feature_beside_random_features_means():
    text = reading(ranking(0.818, 0.728, 0.955))  # the figures of the issue
    assert "0.818" in text and "above the 95th percentile of 200 random live features (0.728)" in text
    assert "best of 200 judged on the test examples themselves" in text  # why 0.955 does not beat it
    assert "well clear of what choosing among many features gives" in text
    weak = reading(ranking(0.70, 0.728, 0.80))
    assert "no better than a feature picked without looking" in weak


def test_a_proportion_interval_never_prints_minus_zero():
    iv = Interval(mean=0.0, lo=-0.0004, hi=0.018, n=48)
    assert interval_text(iv, percent) == "0% [0%–2%]"
    assert percent(-0.0) == "0%" and "-0" not in _pct(iv)


def test_a_proportion_interval_below_zero_reads_zero_in_every_sentence():
    """A fix's headline printed '11% [-37%–59%]' where its table said '11% [0%–59%]': one formatter for both."""
    iv = Interval(mean=0.11, lo=-0.37, hi=0.59, n=6)
    assert iv_text(iv) == interval_text(iv, percent) == "11% [0%–59%]"
    assert _pct(iv) == "11.0% [0.0, 59.0]" and percent(1.2) == "100%"


def test_the_fluency_chart_keeps_the_2x_threshold_in_view_at_182x():
    def point(arm: str, s: float | None, ratio: float) -> PointSummary:
        iv = Interval(mean=ratio, lo=ratio * 0.8, hi=ratio * 1.25, n=24)
        return PointSummary(arm=arm, strength=s, rows=24, concept=iv, concept_act=iv, ppl=iv, ppl_ratio=iv)

    table = [point("unsteered", None, 1.0)] + [point("intervention", s, r) for s, r in ((1, 1.2), (4, 9.0), (8, 182))]
    svg = str(sweep_chart(table, [1, 4, 8], "ppl_ratio", title="t", threshold=2.0, log=True, fmt=ratio))
    y2 = float(re.search(r'class="threshold"[^>]* y1="([\d.]+)"', svg).group(1))
    bottom, height = H - PAD_B, H - PAD_B - PAD_T
    assert bottom - y2 > 0.1 * height  # 15% up a log axis; on a linear one to 227x, 1% (a pixel or two)
    assert ">1.00x<" in svg and ">100.00x<" in svg  # decade ticks
