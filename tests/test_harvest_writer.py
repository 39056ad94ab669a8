"""The store writer on hand-made rows: what goes in comes back, sorted; the write is atomic."""

import duckdb
import numpy as np
import pytest

from qscope.store.writer import SaeTables, write_store


def tables(sae_id: str, n_features: int = 3) -> SaeTables:
    info = {
        "sae_id": sae_id,
        "model_id": "m",
        "layer": 1,
        "site": "model.layers.1",
        "d_in": 4,
        "d_sae": n_features,
        "k": 2,
        "architecture": "topk",
        "format": "qwen-scope",
        "source": "/x",
        "tokens": 100,
        "dead": 1,
        "hist_edges": [1.0, 2.0, 4.0],
    }
    f = np.arange(n_features, dtype=np.int32)[::-1].copy()  # reversed: the writer sorts
    features = {
        "feature": f,
        "density": f / 10,
        "mean_act": f * 1.0,
        "max_act": f * 2.0,
        "n_fired": f.astype(np.int64),
        "label": np.array([f"label {i}" for i in f], dtype=object),
        "top_tokens": np.array([[i, -1, -1] for i in f], dtype=np.int32),
        "hist": np.array([[i, 0] for i in f], dtype=np.int64),
        "interval_width": f / 16,
    }
    contexts = {
        "feature": np.array([2, 0, 0], dtype=np.int32),
        "kind": np.array([0, 0, 1], dtype=np.int8),
        "bin": np.array([-1, -1, 3], dtype=np.int32),
        "rank": np.array([0, 0, 0], dtype=np.int32),
        "act": np.array([1.5, 2.5, 0.5], dtype=np.float32),
        "window": np.array([7, 8, 9], dtype=np.int64),
        "pos": np.array([1, 0, 2], dtype=np.int32),
        "length": np.array([3, 1, 4], dtype=np.int32),
        "token_ids": np.arange(12, dtype=np.int32).reshape(3, 4),
        "acts": np.arange(12, dtype=np.float32).reshape(3, 4) / 4,
    }
    logits = {
        "feature": np.array([1, 0], dtype=np.int32),
        "sign": np.array([1, -1], dtype=np.int8),
        "rank": np.zeros(2, dtype=np.int32),
        "token_id": np.array([5, 6], dtype=np.int32),
        "value": np.array([0.5, -0.5], dtype=np.float32),
    }
    neighbors = {
        "feature": np.array([1, 0], dtype=np.int32),
        "other_sae_id": np.array(["b", "a"], dtype=object),
        "other_feature": np.array([0, 1], dtype=np.int32),
        "cosine": np.array([0.9, 0.8], dtype=np.float32),
        "rank": np.zeros(2, dtype=np.int32),
    }
    return SaeTables(info, features, contexts, logits, neighbors)


def test_rows_come_back_sorted_and_whole(tmp_path):
    out = tmp_path / "s.duckdb"
    out.with_name("s.duckdb.tmp").write_text("stale")
    size = write_store(out, {"model_id": "m"}, [tables("z"), tables("a")], ["<eos>", " the", "é"])
    assert size == out.stat().st_size and not out.with_name("s.duckdb.tmp").exists()
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT sae_id, feature FROM features").fetchall() == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("z", 0),
        ("z", 1),
        ("z", 2),
    ]
    one = "SELECT label, top_tokens, hist FROM features WHERE sae_id = 'a' AND feature = 2"
    assert con.execute(one).fetchall() == [("label 2", [2], [2, 0])]
    got = con.execute(
        "SELECT feature, kind, bin, act, \"window\", pos, token_ids, acts FROM contexts WHERE sae_id = 'a'"
    ).fetchall()
    assert got == [
        (0, "top", None, 2.5, 8, 0, [4], [1.0]),
        (0, "interval", 3, 0.5, 9, 2, [8, 9, 10, 11], [2.0, 2.25, 2.5, 2.75]),
        (2, "top", None, 1.5, 7, 1, [0, 1, 2], [0.0, 0.25, 0.5]),
    ]
    assert con.execute("SELECT feature, other_sae_id FROM neighbors WHERE sae_id = 'z'").fetchall() == [
        (0, "a"),
        (1, "b"),
    ]
    assert con.execute("SELECT token FROM vocab ORDER BY token_id").fetchall() == [("<eos>",), (" the",), ("é",)]
    assert con.execute("SELECT hist_edges FROM saes LIMIT 1").fetchone() == ([1.0, 2.0, 4.0],)
    con.close()


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "bad.duckdb"
    broken = tables("a")
    del broken.info["tokens"]
    with pytest.raises(KeyError):
        write_store(out, {}, [broken], ["x"])
    assert list(tmp_path.iterdir()) == []
