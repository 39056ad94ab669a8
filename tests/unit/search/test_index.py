"""The in-memory search indexes (qscope.search.vectors, qscope.search.text_index) against brute force."""

import numpy as np

from qscope.search import vectors as search_index
from qscope.search.text_index import TextIndex
from qscope.search.vectors import VectorIndex, fit_ivf


def clustered(n: int, d: int = 32, centers: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    x = c[rng.integers(0, centers, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_index_is_brute_force():
    x = clustered(2000)
    q = x[17]
    got = VectorIndex.build(x).top(q, 10)
    want = np.argsort(-(x @ q), kind="stable")[:10]
    assert [r for r, _ in got] == want.tolist() and got[0] == (17, got[0][1])
    assert np.isclose(got[0][1], 1.0, atol=1e-5)


def test_inverted_file_finds_nearly_every_true_neighbor(monkeypatch):
    monkeypatch.setattr(search_index, "EXACT_MAX", 1000)
    x = clustered(20_000)
    index = VectorIndex.build(x)
    assert index.ivf is not None and index.vectors_ND.dtype == np.float16
    ivf = index.ivf
    assert sorted(ivf.order_N.tolist()) == list(range(len(x))) and ivf.offsets[-1] == len(x)
    rng = np.random.default_rng(1)
    recall = []
    for qi in rng.choice(len(x), 50, replace=False):
        want = set(np.argsort(-(x @ x[qi]))[:10].tolist())
        got = {r for r, _ in index.top(x[qi], 10)}
        recall.append(len(want & got) / 10)
    assert np.mean(recall) >= 0.9, np.mean(recall)


def test_ivf_fit_is_deterministic():
    x = clustered(3000)
    a, b = fit_ivf(x, seed=3), fit_ivf(x, seed=3)
    assert np.array_equal(a.order_N, b.order_N) and np.array_equal(a.centroids_CD, b.centroids_CD)


def test_text_index_matches_word_prefixes_and_tokens_ranked_by_score():
    labels = ["python code · def", "Python strings", "rivers and mountains", "the end", "theory of code"]
    tops = [[1, 2], [2], [3], [4], [5]]
    index = TextIndex(labels, tops, np.array([0.1, 0.5, 0.2, 0.3, 0.4]))
    assert index.best(index.label_rows("pyth"), 10).tolist() == [1, 0]  # prefix, case-folded, by score
    assert index.best(index.label_rows("python code"), 10).tolist() == [0]  # every word must match
    assert index.label_rows("of").tolist() == [4] and index.label_rows("co").tolist() == []  # short: whole words
    assert index.best(index.label_rows("the"), 10).tolist() == [4, 3] and index.label_rows("theo").tolist() == [4]
    assert index.label_rows("ython").tolist() == [] and index.label_rows("  ").tolist() == []
    assert index.best(index.token_rows([2, 99]), 1).tolist() == [1]
