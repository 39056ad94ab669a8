"""Discover's pure parts, by hand: metrics, thresholds, ranking and its controls, detectors, footprints and their
files, example parsing and cleaning. No model here (tests/integration/discover/test_discover.py runs mini-Qwen)."""

import csv
import io

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from qscope.discover import footprint_files
from qscope.discover.detectors import Detector, DetectorSpec, FittedTerm, Term, evaluate, fit_logreg, fit_rule
from qscope.discover.examples import (
    ExampleLimits,
    ExamplesError,
    build_set,
    check_size,
    label_of,
    read_file,
    split_indices,
    split_lines,
)
from qscope.discover.footprints import Stats, compare, members, stats, summarize
from qscope.discover.metrics import auroc, auroc_from_ranks, best_thresholds, column_ranks, confusion, f1_at
from qscope.discover.ranking import RankInputs, rank


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(60, 5)).astype(np.float32)  # many ties
    y = rng.integers(0, 2, size=60)
    ours = auroc_from_ranks(column_ranks(X), y)
    for j in range(5):
        assert ours[j] == pytest.approx(roc_auc_score(y, X[:, j]), abs=1e-6)
    assert auroc(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.zeros(4), np.array([1, 1, 0, 0])) == 0.5


def test_best_threshold_by_hand():
    X = np.array([[5.0], [3.0], [3.0], [0.0]], np.float32)
    y = np.array([1, 1, 0, 0])
    # cuts: above 5 -> TP 1 of 1 predicted, F1 2/3; the 3s cannot be split; above 0 -> TP 2 of 3, F1 0.8
    fit = best_thresholds(X, y)
    assert fit.threshold[0] == pytest.approx(1.5) and fit.f1[0] == pytest.approx(0.8)
    assert f1_at(X, y, fit.threshold)[0] == pytest.approx(0.8)
    silent = best_thresholds(np.zeros((4, 1), np.float32), y)
    assert silent.f1[0] == 0.0 and f1_at(np.zeros((4, 1), np.float32), y, silent.threshold)[0] == 0.0


def test_confusion_by_hand():
    cm = confusion(np.array([1, 1, 0, 0, 1, 0], bool), np.array([1, 0, 1, 0, 1, 0]))
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (2, 1, 1, 2)
    assert cm.precision == pytest.approx(2 / 3) and cm.recall == pytest.approx(2 / 3)
    assert cm.f1 == pytest.approx(2 / 3) and cm.accuracy == pytest.approx(4 / 6)
    assert confusion(np.zeros(2, bool), np.array([1, 0])).precision is None


def _synthetic(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = np.array([1] * n + [0] * n, np.int8)
    X = rng.exponential(1.0, size=(2 * n, 50)).astype(np.float32) * (rng.random((2 * n, 50)) < 0.5)
    X[:, 7] = np.where(y == 1, 2.0 + rng.random(2 * n), rng.random(2 * n) * 0.5)  # separates A from B
    X[:, 3] = np.where(y == 0, 1.5 + rng.random(2 * n), 0.0)  # marks B
    X[:, 11] = 0.0  # silent
    keys = [("s", f) for f in range(50)]
    train, test = split_indices(y, 0.3, seed)
    return RankInputs(X, X / 2, keys, y, train, test)


def test_rank_finds_the_separating_feature_and_the_controls_say_chance():
    r = rank(_synthetic(), top=5, n_random=40, n_shuffles=30, seed=1)
    top = r.a_side[0]
    assert (top.sae_id, top.feature) == ("s", 7)
    assert top.test_auroc == 1.0 and top.test_f1 == 1.0 and 0.5 < top.threshold < 2.0
    assert top.mean_diff > 1.5 and top.fires_a == 1.0 and len(top.strip) == 240
    assert r.b_side[0].feature == 3 and r.b_side[0].test_auroc == 1.0 and r.b_side[0].mean_diff < 0
    assert r.n_live == 49 and r.n_features == 50
    assert r.baseline.mean == pytest.approx(0.5, abs=0.1) and top.test_auroc > r.baseline.p95
    assert r.shuffle.n == 30 and abs(r.shuffle.test_mean - 0.5) < 4 * r.shuffle.null_sd
    assert np.mean(r.shuffle.train_aurocs) > r.shuffle.test_mean  # picking the best on train overfits


def test_rule_detector_by_hand():
    X = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0], [2.0, 3.0]])
    terms = [
        FittedTerm(sae_id="s", feature=1, threshold=1.0, scale=2.0),
        FittedTerm(sae_id="s", feature=2, threshold=1.0, scale=3.0),
    ]
    anyof, allof = Detector(kind="rule", combine="any", terms=terms), Detector(kind="rule", combine="all", terms=terms)
    assert anyof.fires(X).tolist() == [True, True, False, True]
    assert allof.fires(X).tolist() == [False, False, False, True]
    trips = anyof.trips(np.array([[0.5, 0.0], [1.5, 2.0]]), np.ones((2, 2), bool))
    assert trips.tolist() == [[False, False], [True, True]]
    assert not anyof.trips(np.array([[5.0, 5.0]]), np.zeros((1, 2), bool)).any()  # an uncounted token never trips


def test_fitted_rule_scores_equal_a_hand_count():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    X = (y[:, None] * 1.0 + rng.normal(0, 0.8, (80, 2))).clip(0)
    d = fit_rule(
        DetectorSpec(terms=[Term(sae_id="s", feature=0), Term(sae_id="s", feature=1, threshold=0.9)]), X[:40], y[:40]
    )
    assert d.terms[1].threshold == 0.9 and d.terms[0].threshold == best_thresholds(X[:40, :1], y[:40]).threshold[0]
    s = evaluate(d, X[40:], y[40:])
    fired = (X[40:, 0] > d.terms[0].threshold) | (X[40:, 1] > 0.9)
    tp, fp = int((fired & (y[40:] == 1)).sum()), int((fired & (y[40:] == 0)).sum())
    fn = int((~fired & (y[40:] == 1)).sum())
    assert (s.tp, s.fp, s.fn) == (tp, fp, fn)
    assert s.precision == pytest.approx(tp / (tp + fp)) and s.recall == pytest.approx(tp / (tp + fn))
    assert s.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_rule_limits():
    from qscope.discover.detectors import DetectorError

    X, y = np.zeros((4, 6)), np.array([1, 1, 0, 0])
    with pytest.raises(DetectorError, match="1 to 5"):
        fit_rule(DetectorSpec(terms=[Term(sae_id="s", feature=f) for f in range(6)]), X, y)
    with pytest.raises(DetectorError, match="twice"):
        fit_rule(DetectorSpec(terms=[Term(sae_id="s", feature=1)] * 2), X[:, :2], y)


def test_logreg_is_sparse_and_picks_the_signal():
    inp = _synthetic(seed=4)
    d = fit_logreg(inp.X_max[inp.train], inp.y[inp.train], inp.keys, seed=0)
    weights = {t.feature: t.coef for t in d.terms}
    assert weights.get(7, 0) > 0 and weights.get(3, 0) <= 0 and 11 not in weights
    assert len(d.terms) < 50
    cols = [f for _, f in d.keys]
    assert evaluate(d, inp.X_max[inp.test][:, cols], inp.y[inp.test]).f1 == 1.0


def _stats(name, fire, mass):
    return Stats(name, [("s", i) for i in range(len(fire))], np.array(fire, float), np.array(mass, float), 10, 100)


def test_footprint_overlap_self_disjoint_and_by_hand():
    a = _stats("A", [0.5, 0.3, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0])
    b = _stats("B", [0.25, 0.0, 0.5, 0.4], [0.1, 0.0, 0.5, 0.4])
    assert compare(a, a, "examples", 0.2).overlap == 1.0
    assert compare(a, a, "mass", 0.5).overlap == 1.0
    disjoint = compare(_stats("A", [0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0]), _stats("B", [0, 0, 0.9, 0.9], [0, 0, 0.5, 0.5]))
    assert disjoint.overlap == 0.0 and disjoint.a_covered_by_b == 0.0 and disjoint.shared == 0
    c = compare(a, b, "examples", 0.2)  # A = {0, 1}, B = {0, 2, 3}
    assert (c.size_a, c.size_b, c.shared) == (2, 3, 1)
    assert c.overlap == pytest.approx(1 / 4) and c.a_covered_by_b == pytest.approx(1 / 2)
    assert c.b_covered_by_a == pytest.approx(1 / 3)
    assert c.a_covered_by_b_mass == pytest.approx(0.6 / 0.9)
    assert [f.feature for f in c.only_a] == [1] and [f.feature for f in c.only_b] == [2, 3]
    assert members(a, "mass", 0.8).tolist() == [True, True, False, False]  # 0.6 then 0.3 reaches 0.8
    assert members(a, "mass", 0.95).tolist() == [True, True, True, False]
    assert summarize(a, "examples", 0.2).size == 2


def test_footprint_stats_from_counts():
    s = stats("A", {"x": np.array([5, 0, 10])}, {"x": np.array([1.0, 0.0, 3.0])}, 10, 40)
    assert s.fire_share.tolist() == [0.5, 0.0, 1.0] and s.mass_share.tolist() == [0.25, 0.0, 0.75]
    assert s.keys == [("x", 0), ("x", 1), ("x", 2)]


@pytest.mark.parametrize("suffix", [".parquet", ".duckdb"])
def test_footprint_file_round_trip(tmp_path, suffix):
    a = _stats("A's set", [0.5, 0.3, 0.1, 0.0, 0.0], [0.6, 0.3, 0.1, 0.0, 0.0])
    b = _stats("B", [0.25, 0.0, 0.5, 0.4, 0.0], [0.1, 0.0, 0.5, 0.4, 0.0])
    path = footprint_files.write(tmp_path / f"fp{suffix}", a, b, "examples", 0.2, {("s", 0): "zero"}, {"model_id": "m"})
    assert not list(tmp_path.glob(".*tmp"))  # written beside and renamed
    f = footprint_files.read(path)
    assert f.meta["model_id"] == "m" and f.by == "examples" and f.labels[("s", 0)] == "zero"
    again, before = compare(f.a, f.b, f.by, f.share), compare(a, b, "examples", 0.2)
    assert (again.overlap, again.a_covered_by_b, again.shared) == (before.overlap, before.a_covered_by_b, 1)
    assert f.a.name == "A's set" and len(f.a.keys) == 4  # the feature that fired nowhere is left out
    single = footprint_files.read(footprint_files.write(tmp_path / f"one{suffix}", a, None, "mass", 0.5, {}, {}))
    assert single.b is None and members(single.a, "mass", 0.5).sum() == 1


def test_footprint_file_refusals(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(footprint_files.FootprintFileError, match="x.parquet is not a readable parquet file"):
        footprint_files.read(bad)
    with pytest.raises(footprint_files.FootprintFileError, match=".parquet or .duckdb"):
        footprint_files.write(tmp_path / "x.csv", _stats("A", [1], [1]), None, "examples", 0.2, {}, {})


def test_split_lines_blocks_and_empties():
    assert split_lines("a\n\n b \n\nc\n") == (["a", "b", "c"], 2)
    texts, empty = split_lines("def f():\n    return 1\n---\n\n---\nx = 2\n")
    assert texts == ["def f():\n    return 1", "x = 2"] and empty == 1


def test_build_set_cleans_and_says_so():
    limits = ExampleLimits(min_per_class=2)
    s = build_set(["a", "a", "b", "shared", ""], ["c", "d", "shared"], limits)
    assert s.texts == ["a", "b", "c", "d"] and s.labels.tolist() == [1, 1, 0, 0]
    notes = " | ".join(s.notes)
    assert "1 repeated example(s) within set A" in notes and "1 example(s) found in both sets" in notes
    assert "1 empty example(s) of set A" in notes
    with pytest.raises(ExamplesError, match="only one class: set B is empty"):
        build_set(["a", "b"], ["", " "], limits)
    with pytest.raises(ExamplesError, match="set B has 1 usable"):
        build_set(["a", "b"], ["c"], limits)
    with pytest.raises(ExamplesError, match="at most 3 per set"):
        build_set(["a", "b", "c", "d"], ["e", "f"], ExampleLimits(max_examples=3, min_per_class=2))


def test_csv_rows_read_as_csv_dict_reader_reads_them():
    """The shared reader (qscope.inputs.files) replaced csv.DictReader here: the same rows come out."""
    content = 'label,text,text\n1,first,"second, quoted"\n\n0,"multi\nline"\n1\n0,a,b,extra\n'
    expected = [(row["text"] or "", row["label"]) for row in csv.DictReader(io.StringIO(content))]
    assert read_file("x.csv", content, label_field="label") == expected


def test_files_and_labels():
    rows = read_file("x.csv", "text,label\nhello,1\nworld,0\n", label_field="label")
    assert rows == [("hello", "1"), ("world", "0")]
    with pytest.raises(ExamplesError, match="no label column 'label'.*'text', 'kind'"):
        read_file("x.csv", "text,kind\nhello,1\n", label_field="label")
    rows = read_file("x.jsonl", '{"text": "a", "label": true}\n\n{"text": "b", "label": false}\n', label_field="label")
    assert [label_of(r, None) for _, r in rows] == [1, 0]
    with pytest.raises(ExamplesError, match="line 1: not JSON"):
        read_file("x.jsonl", "{oops\n")
    with pytest.raises(ExamplesError, match="line 2: JSON nested too deeply"):
        read_file("x.jsonl", '{"text": "a"}\n' + '{"text": ' * 5000 + '"b"' + "}" * 5000)
    with pytest.raises(ExamplesError, match="line 1: NaN is not a finite number"):
        read_file("x.jsonl", '{"text": "a", "label": NaN}\n', label_field="label")
    with pytest.raises(ExamplesError, match="positive_label"):
        label_of("spam", None)
    assert label_of("spam", "spam") == 1 and label_of("ham", "spam") == 0
    assert label_of(1.0, None) == 1 and label_of(False, None) == 0
    with pytest.raises(ExamplesError, match="at most 10 bytes"):
        check_size("big.txt", 11, ExampleLimits(max_file_bytes=10))


def test_split_is_seeded_and_stratified():
    y = np.array([1] * 10 + [0] * 20, np.int8)
    tr, te = split_indices(y, 0.3, 7)
    tr2, te2 = split_indices(y, 0.3, 7)
    assert tr.tolist() == tr2.tolist() and te.tolist() == te2.tolist()
    assert y[te].sum() == 3 and (y[te] == 0).sum() == 6 and len(set(tr) | set(te)) == 30
    assert split_indices(y, 0.3, 8)[1].tolist() != te.tolist()


def test_a_logistic_regression_that_kept_no_feature_scores_its_intercept():
    """L1 may zero every weight (examples no feature tells apart): the detector is a constant, not a crash."""
    empty = Detector(kind="logreg", terms=[], intercept=-0.25, C=1.0)
    assert empty.score(np.zeros((4, 0))).tolist() == [-0.25] * 4
    assert not empty.fires(np.zeros((3, 0))).any()
    always = Detector(kind="logreg", terms=[], intercept=0.5, C=1.0)
    assert always.fires(np.zeros((2, 0))).all()
