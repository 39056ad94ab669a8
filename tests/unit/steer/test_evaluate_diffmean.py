"""The DiffMean arm without a model: the mean difference, the pooling and the residual norm on a small fixed set,
its edits (sign x strength x norm along the unit direction) applied to a residual, and the comparison of the arms
with its sentence, each against a hand computation."""

import math

import numpy as np
import pytest
import torch

from qscope.discover.baselines import diffmean
from qscope.residual import counted_mask, mean_difference, pooled_mean
from qscope.sae import Sae
from qscope.sae.formats.common import SaeSpec
from qscope.steer.edits import SiteSteer
from qscope.steer.evaluate import diffmean as dm
from qscope.steer.evaluate.arms import Point
from qscope.steer.evaluate.compare import compare_arms
from qscope.steer.evaluate.result import DiffMeanInfo, Interval, PointSummary


def test_mean_difference_by_hand_and_discover_uses_the_same():
    H = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0], [2.0, -1.0], [10.0, 10.0]])
    y = np.array([1, 1, 0, 0, 1])
    # with: (1,2), (3,4), (10,10) -> (14/3, 16/3); without: (0,1), (2,-1) -> (1, 0)
    assert mean_difference(H, y) == pytest.approx([14 / 3 - 1, 16 / 3 - 0])
    train = np.array([0, 1, 2, 3])  # discover's DiffMean: the same, on the train rows only
    assert diffmean(H, y, train).w_D == pytest.approx([2.0 - 1.0, 3.0 - 0.0])
    with pytest.raises(ValueError, match="both labels"):
        mean_difference(H, np.ones(5))


def test_pooling_leaves_out_position_0_sinks_and_padding():
    # one row of 4 tokens: norms 1, 1, 100 (a sink: > 10 x the median 1), 1 -> counted: positions 1 and 3
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [100.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    mask = counted_mask(h, [4], skip_first=True, sink_norm_ratio=10.0)
    assert mask.tolist() == [[False, True, False, True, False]]
    assert pooled_mean(h, mask).tolist() == [[0.5, 0.5]]
    single = counted_mask(torch.ones(1, 3, 2), [1], skip_first=True, sink_norm_ratio=10.0)
    assert single.tolist() == [[True, False, False]]  # position 0 counts when it is the whole text


def small_sae(D: int = 3) -> Sae:
    eye = torch.eye(D)
    return Sae(SaeSpec(eye.clone(), torch.zeros(D), eye.clone(), torch.zeros(D), "relu", site="model.layers.0"))


def test_the_arm_adds_sign_x_strength_x_norm_along_the_unit_direction():
    sae = small_sae()
    info = DiffMeanInfo(
        site="model.layers.0", sae_id="s", source="two prompt sets given", n_with=2, n_without=2,
        residual_norm=5.0, direction_norm=2.0, sign=-1.0,
    )  # fmt: skip
    arm = dm.DiffMeanArm(info, torch.tensor([0.0, 3.0, 4.0]))  # unit: (0, .6, .8)
    pts = [Point("diffmean", 2.0), Point("intervention", 2.0)]
    edits = dm.edits(arm, sae, pts)
    assert list(edits) == [pts[0]]
    (e,) = edits[pts[0]]["model.layers.0"]
    assert (e.mode, e.value, e.feature) == ("add", -10.0, -1)  # -1 x 2 x 5
    h = torch.tensor([[[1.0, 1.0, 1.0]]])
    out = SiteSteer([[e]])(h, torch.ones(1, 1, dtype=torch.bool))
    assert out[0, 0].tolist() == pytest.approx([1.0, 1.0 - 6.0, 1.0 - 8.0])


def iv(mean: float, half: float = 0.05) -> Interval:
    return Interval(mean=mean, lo=mean - half, hi=mean + half, n=16)


def point(arm: str, strength: float | None, concept: float, ratio: float = 1.0) -> PointSummary:
    return PointSummary(
        arm=arm, strength=strength, rows=16, concept=iv(concept), concept_act=iv(1.0), ppl=iv(20.0), ppl_ratio=iv(ratio)
    )


def table(sae: float, diffmean: float, prompt: float) -> list[PointSummary]:
    return [
        point("unsteered", None, 0.1),
        point("intervention", 0.0, 0.1),
        point("intervention", 1.0, sae),
        point("intervention", 4.0, 0.99, 5.0),  # past the fluency bound: never counted
        point("random", 1.0, 0.12),
        point("prompt-only", None, prompt),
        point("diffmean", 1.0, diffmean),
        point("diffmean", 2.0, 0.95, 3.0),  # past the bound
    ]


def test_the_comparison_ranks_fluent_points_and_words_the_intervals():
    # SAE 0.50 [0.45, 0.55] and DiffMean 0.52 [0.47, 0.57] overlap: as good as each other; DiffMean's mean leads
    c = compare_arms(table(0.50, 0.52, 0.2), "increase", 2.0, works=True)
    assert [b.arm for b in c.arms][:3] == ["diffmean", "intervention", "prompt-only"]
    assert (c.arms[0].strength, c.arms[1].strength) == (1.0, 1.0)  # not the strengths past the bound
    assert c.best == "diffmean" and c.as_good == ["intervention"]
    assert c.sentence.startswith("the SAE feature works and is as good as DiffMean (reads: DiffMean 52% [47%–57%]")
    assert (
        "compared, at perplexity at most 2x the unsteered, with the SAE feature, prompting alone, random features "
        "and no steering" in c.sentence
    )
    # SAE 0.70 clears DiffMean 0.52 and everything else
    c = compare_arms(table(0.70, 0.52, 0.2), "increase", 2.0, works=True)
    assert c.best == "intervention" and c.as_good == []
    assert c.sentence.startswith(
        "the SAE feature works and does best (reads: the SAE feature 70% [65%–75%] at strength 1)"
    )
    # prompting alone 0.60 clears the SAE's 0.40: prompting alone does better
    c = compare_arms(table(0.40, 0.3, 0.60), "increase", 2.0)
    assert c.best == "prompt-only"
    assert c.sentence.startswith("prompting alone does better than the SAE feature (reads: prompting alone 60%")
    # decrease: the lowest wins; DiffMean 0.02 [-0.03, 0.07] clears the SAE's 0.30 [0.25, 0.35]
    c = compare_arms(table(0.30, 0.02, 0.2), "decrease", 2.0)
    assert c.best == "diffmean" and c.sentence.startswith("DiffMean does better than the SAE feature")


def test_no_fluent_arm_is_said_so():
    t = [point("unsteered", None, 0.1, math.inf), point("intervention", 1.0, 0.5, 9.0)]
    c = compare_arms(t, "increase", 2.0)
    assert c.best is None and c.sentence == "no arm keeps perplexity at most 2x the unsteered, so none is ranked"
    assert [b.fluent for b in c.arms] == [False, False]
