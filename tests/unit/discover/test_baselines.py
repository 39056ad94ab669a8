"""The detection baselines (qscope.discover.baselines) and the decomposition of a direction over an SAE
(qscope.discover.decompose) against hand computations on small fixed sets."""

import numpy as np
import pytest
import torch

from qscope.discover.baselines import Resamples, compare, diffmean, fit_probe, judge
from qscope.discover.decompose import decompose, explained_share
from qscope.discover.detectors import DetectorError, evaluate, fit_direction
from qscope.sae import load_sae, save_qwen_scope

# four examples a side in 2-d: set A sits at x = 2, set B at x = 0; y is noise the classes share
H = np.array(
    [[2.0, 1.0], [2.5, -1.0], [1.5, 0.5], [2.0, 0.0], [0.0, 1.0], [0.5, -1.0], [-0.5, 0.5], [0.0, 0.0]],
    dtype=np.float32,
)
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
TRAIN, TEST = np.array([0, 1, 4, 5]), np.array([2, 3, 6, 7])


def test_diffmean_is_the_difference_of_the_train_means():
    d = diffmean(H, Y, TRAIN)
    # train A: (2, 1), (2.5, -1) -> mean (2.25, 0); train B: (0, 1), (0.5, -1) -> mean (0.25, 0)
    np.testing.assert_allclose(d.w_D, [2.0, 0.0])
    np.testing.assert_allclose(d.score(H), 2.0 * H[:, 0])


def test_the_probe_separates_separable_data_and_reads_the_raw_residual():
    p = fit_probe(H, Y, np.arange(8))
    assert p.C is not None and p.w_D[0] > 0 and abs(p.w_D[1]) < abs(p.w_D[0])
    s = p.score(H)
    assert s[Y == 1].min() > s[Y == 0].max()  # every A above every B
    # the folded direction scores the raw residual as the standardised model did: h . w + b
    np.testing.assert_allclose(s, H.astype(np.float64) @ p.w_D.astype(np.float64) + p.bias, rtol=1e-5)


def test_judge_thresholds_on_train_and_scores_on_test():
    boot = Resamples(Y[TEST], n=200, seed=0)
    j = judge("DiffMean", "model.layers.1", diffmean(H, Y, TRAIN).score(H), Y, TRAIN, TEST, boot)
    # train scores A: 4, 5; B: 0, 1 -> the F1-best cut is between 4 and 1 (midpoint 2.5); test A: 3, 4; B: -1, 0
    assert j.threshold == pytest.approx(2.5) and j.test_auroc == 1.0 and j.test_f1 == 1.0
    assert j.auroc_interval == (1.0, 1.0) and j.f1_interval == (1.0, 1.0)


def test_resampled_auroc_is_the_auroc_of_the_resampled_examples():
    rng = np.random.default_rng(3)
    y = np.array([1] * 6 + [0] * 6)
    s = rng.normal(size=12) + y
    boot = Resamples(y, n=50, seed=1)
    got = boot.auroc(s, y)
    for b in (0, 17, 49):
        idx = boot.idx_BE[b]
        ys, ss = y[idx], s[idx]
        pairs = [(a > c) + 0.5 * (a == c) for a in ss[ys == 1] for c in ss[ys == 0]]
        assert got[b] == pytest.approx(np.mean(pairs))


def test_the_comparison_says_which_is_better_only_when_the_interval_does():
    y = np.array([1] * 20 + [0] * 20)
    perfect = y + 0.01 * np.arange(40)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=40)
    boot = Resamples(y, n=500, seed=0)
    idx = np.arange(40)
    a = judge("probe", "s", perfect, y, idx, idx, boot)
    b = judge("best feature", "s", noise, y, idx, idx, boot)
    c = compare(a, b, perfect, noise, y, boot)
    assert c.interval[0] > 0 and c.sentence.startswith("probe is better than best feature by")
    flipped = compare(b, a, noise, perfect, y, boot)
    assert flipped.interval[1] < 0 and flipped.sentence.startswith("probe is better than best feature by")
    same = compare(a, a, perfect, perfect, y, boot)
    assert same.interval == (0.0, 0.0) and "match" in same.sentence


def test_a_decoder_direction_decomposes_into_its_own_feature(tmp_path):
    # Qwen-Scope orientation: W_enc [F, D], W_dec [D, F]; decoder rows (directions) e0, e1 and (1, 1)/sqrt 2
    W_dec = torch.tensor([[1.0, 0.0, 0.7071068], [0.0, 1.0, 0.7071068]])
    W_enc = W_dec.T.clone()
    save_qwen_scope(tmp_path / "layer0.sae.pt", W_enc, torch.zeros(3), W_dec, torch.zeros(2))
    sae = load_sae(tmp_path / "layer0.sae.pt", k=1)
    got = decompose("s", sae, torch.tensor([3.0, 0.0]), norm=2.0, top=2)
    assert [p.feature for p in got.by_cosine] == [0, 2]
    assert got.by_cosine[0].value == pytest.approx(1.0) and got.by_cosine[1].value == pytest.approx(0.7071068)
    # encoding 2 * e0: pre-activations (2, 0, 1.414); k = 1 keeps feature 0 at 2
    assert [(p.feature, round(p.value, 4)) for p in got.by_encoding] == [(0, 2.0)]
    assert got.share == pytest.approx(1.0)


def test_explained_share_is_the_projection_over_the_norm():
    directions = torch.tensor([[1.0, 0.0, 0.0]])
    assert explained_share(directions, torch.tensor([3.0, 4.0, 0.0])) == pytest.approx(9 / 25)
    assert explained_share(directions, torch.zeros(3)) == 0.0


def test_a_diffmean_detector_puts_its_f1_best_train_threshold_at_zero():
    """Issue 26: a baseline saved as a detector. Train: w = (2, 0) (above); train scores A: 4, 5 and B: 0, 1, so the
    F1-best cut is 2.5 and the detector's score is 2x - 2.5: on test, A at x = 1.5, 2 fire and B at -0.5, 0 do not."""
    det = fit_direction("diffmean", H[TRAIN], Y[TRAIN], "model.layers.1")
    assert det.kind == "diffmean" and det.site == "model.layers.1" and det.keys == [] and det.reads_residual
    np.testing.assert_allclose(det.direction, [2.0, 0.0])
    assert det.intercept == pytest.approx(-2.5)
    np.testing.assert_allclose(det.score(H[TEST]), [0.5, 1.5, -3.5, -2.5])
    scores = evaluate(det, H[TEST], Y[TEST])
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (2, 0, 0, 2) and scores.auroc == 1.0


def test_a_probe_detector_fires_where_the_probe_scores_above_its_train_threshold():
    det = fit_direction("probe", H, Y, "model.layers.1")
    probe = fit_probe(H, Y, np.arange(8))
    s = probe.score(H).astype(np.float64)
    np.testing.assert_allclose(det.score(H), s - (probe.bias - det.intercept), rtol=1e-5, atol=1e-6)
    assert list(det.score(H) > 0) == [True] * 4 + [False] * 4


def test_a_direction_needs_both_sets_on_train():
    with pytest.raises(DetectorError, match="both sets"):
        fit_direction("diffmean", H[:4], Y[:4], "model.layers.1")
    with pytest.raises(DetectorError, match="not a residual direction"):
        fit_direction("rule", H, Y, "model.layers.1")
