"""Stores written by the real writer from hand-made rows, for tests that need exact tokens and numbers a harvest
cannot be asked for: a hostile two-feature store (markup, quotes and '&' in tokens and labels), a small
three-feature table set, and the newcomer store (split characters, long tokens, a dead feature, two SAEs)."""

from pathlib import Path

import numpy as np

from qscope.harvest.effects import make_label
from qscope.harvest.state import HIST_EDGES
from qscope.store.writer import SaeTables, write_store

VOCAB = ["<|endoftext|>", "<script>alert(1)</script>", ' "quoted"', " a & b", "'single'", "\n", "  ", "plain"]
LABEL = "<b>bold</b> & \"q\" 's'"
SAE_ID = "evil__layer0"


def hostile_tables() -> SaeTables:
    F, W, H = 2, 6, len(HIST_EDGES) - 1
    hist = np.zeros((F, H), np.int64)
    hist[:, 50] = 3
    info = {
        "sae_id": SAE_ID,
        "model_id": "evil",
        "layer": 0,
        "site": "model.layers.0",
        "d_in": 4,
        "d_sae": F,
        "k": 1,
        "architecture": "topk",
        "format": "qwen-scope",
        "source": "/nonexistent/layer0.sae.pt",
        "tokens": 100,
        "dead": 0,
        "hist_edges": HIST_EDGES.double().tolist(),
    }
    features = {
        "feature": np.arange(F, dtype=np.int32),
        "density": np.array([0.03, 0.01]),
        "mean_act": np.array([1.0, 1.0]),
        "max_act": np.array([2.0, 2.0]),
        "n_fired": np.array([3, 1]),
        "label": np.array([LABEL, "plain"], dtype=object),
        "top_tokens": np.array([[1, 2, 3], [4, 5, -1]], np.int32),
        "hist": hist,
        "interval_width": np.array([0.125, 0.125]),
    }
    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 1, 2, 3, 4, 5]], np.int32)
    acts = np.array([[0.5, 2.0, 1.0, 0.0, 0.3, 0.0], [0.0, 1.0, 2.0, 0.0, 0.0, 0.0]], np.float32)
    contexts = {
        "feature": np.array([0, 1], np.int32),
        "kind": np.array([0, 0], np.int8),
        "bin": np.array([-1, -1], np.int32),
        "rank": np.array([0, 0], np.int32),
        "act": np.array([2.0, 2.0], np.float32),
        "window": np.array([0, 1], np.int64),
        "pos": np.array([1, 2], np.int32),
        "length": np.array([W, W], np.int32),
        "token_ids": ids,
        "acts": acts,
    }
    logits = {
        "feature": np.array([0, 0], np.int32),
        "sign": np.array([1, -1], np.int8),
        "rank": np.array([0, 0], np.int32),
        "token_id": np.array([1, 3], np.int32),
        "value": np.array([0.5, -0.5], np.float32),
    }
    neighbors = {
        "feature": np.array([0], np.int32),
        "other_sae_id": np.array([SAE_ID], dtype=object),
        "other_feature": np.array([1], np.int32),
        "cosine": np.array([0.5], np.float32),
        "rank": np.array([0], np.int32),
    }
    return SaeTables(info, features, contexts, logits, neighbors)


def write_small_store(out):
    """A two-feature store with hostile tokens, written by the real writer (also used by tests/test_search)."""
    write_store(out, {"schema_version": "1", "model_id": "evil", "model": "/nonexistent"}, [hostile_tables()], VOCAB)
    return out


def sae_tables(sae_id: str, n_features: int = 3) -> SaeTables:
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


# The newcomer store
MODEL_ID = "wide"
NEWCOMER_VOCAB: list[bytes] = [
    b"<|endoftext|>",
    b" the",
    ("+" + "-" * 60 + "+").encode(),  # 2: a long box-drawing rule
    b" \xe6",  # 3: ' ' and the first byte of 日 (E6 97 A5)
    b"\x97\xa5",  # 4: the rest of 日
    b"\xf0\x9f",  # 5: the first half of 😀 (F0 9F 98 80)
    b"\x98\x80",  # 6: the second half
    " 本".encode(),
    "語".encode(),
    b"\xe2",  # 9: a byte that completes nothing here
    b"x" * 80,  # 10: a long token without a break
    b" cat",
]
CONTEXT = [1, 3, 4, 7, 8, 5, 6, 9, 11, 2, 10, 1]
SAE_IDS = ("SAE-Res-wide-W1K-L0_8__layer0", "SAE-Res-wide-W1K-L0_8__layer1")
DEAD = 1  # feature 1 never fired


def _newcomer_tables(sae_id: str, layer: int, other: str) -> SaeTables:
    F, H, W = 3, len(HIST_EDGES) - 1, len(CONTEXT)
    hist = np.zeros((F, H), np.int64)
    hist[[0, 2], 60] = 5
    info = {
        "sae_id": sae_id,
        "model_id": MODEL_ID,
        "layer": layer,
        "site": f"model.layers.{layer}",
        "d_in": 4,
        "d_sae": F,
        "k": 8,
        "architecture": "topk",
        "format": "qwen-scope",
        "source": f"/nonexistent/layer{layer}.sae.pt",
        "tokens": 990,
        "dead": 1,
        "hist_edges": HIST_EDGES.double().tolist(),
    }
    marked = [[4, 6, 9], [], [8, 11]]
    promoted = [[2, 10, 4], [2, 10], [10, 2]]
    features = {
        "feature": np.arange(F, dtype=np.int32),
        "density": np.array([0.005, 0.0, 0.005]),
        "mean_act": np.array([2.0, 0.0, 1.0]),
        "max_act": np.array([4.0, 0.0, 2.0]),
        "n_fired": np.array([5, 0, 5]),
        "label": np.array(
            [
                make_label(m, p, NEWCOMER_VOCAB, at_max={4: "日", 6: "😀"})
                for m, p in zip(marked, promoted, strict=True)
            ],
            dtype=object,
        ),
        "top_tokens": np.array([[4, 6, 9], [-1, -1, -1], [8, 11, -1]], np.int32),
        "hist": hist,
        "interval_width": np.array([0.25, 0.0, 0.125]),
    }
    ids = np.array([CONTEXT, CONTEXT[::-1]], np.int32)
    acts = np.zeros((2, W), np.float32)
    acts[0, [2, 4, 6, 7, 10]] = [4.0, 1.0, 2.0, 0.5, 1.5]
    acts[1, [3, 5]] = [2.0, 1.0]
    contexts = {
        "feature": np.array([0, 2], np.int32),
        "kind": np.array([0, 0], np.int8),
        "bin": np.array([-1, -1], np.int32),
        "rank": np.array([0, 0], np.int32),
        "act": np.array([4.0, 2.0], np.float32),
        "window": np.array([0, 1], np.int64),
        "pos": np.array([2, 3], np.int32),
        "length": np.array([W, W], np.int32),
        "token_ids": ids,
        "acts": acts,
    }
    logits = {
        "feature": np.repeat(np.array([0, 2], np.int32), 4),
        "sign": np.array([1, 1, -1, -1] * 2, np.int8),
        "rank": np.array([0, 1, 0, 1] * 2, np.int32),
        "token_id": np.array([2, 10, 5, 3, 10, 2, 9, 4], np.int32),
        "value": np.array([0.9, 0.8, -0.7, -0.6, 0.5, 0.4, -0.3, -0.2], np.float32),
    }
    neighbors = {
        "feature": np.array([0, 0, 0, 2], np.int32),
        "other_sae_id": np.array([sae_id, sae_id, other, sae_id], dtype=object),
        "other_feature": np.array([2, 1, 0, 0], np.int32),
        "cosine": np.array([0.92, 0.26, 0.81, 0.92], np.float32),
        "rank": np.array([0, 1, 0, 0], np.int32),
    }
    return SaeTables(info, features, contexts, logits, neighbors)


def write_newcomer_store(out: Path) -> Path:
    meta = {"model_id": MODEL_ID, "model": "/nonexistent/wide-model", "tokens": "1024", "corpus": "hand-made"}
    write_store(
        out,
        meta,
        [_newcomer_tables(SAE_IDS[0], 0, SAE_IDS[1]), _newcomer_tables(SAE_IDS[1], 1, SAE_IDS[0])],
        NEWCOMER_VOCAB,
    )
    return out
