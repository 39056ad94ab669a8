"""A small feature store that holds what a newcomer's pages must cope with, written by the real writer: tokens that
are parts of UTF-8 characters (日 and 😀 split over two tokens, a lone byte that completes nothing), very long
tokens (a box-drawing rule, a run of 80 letters) at the top of the logit effects, a dead feature, and neighbors
in two SAEs. A harvest cannot be asked for these exact tokens; the model it records does not exist (its live
pages say so)."""

from pathlib import Path

import numpy as np

from qscope.harvest.effects import make_label
from qscope.harvest.state import HIST_EDGES
from qscope.store.writer import SaeTables, write_store

MODEL_ID = "wide"
VOCAB: list[bytes] = [
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


def _tables(sae_id: str, layer: int, other: str) -> SaeTables:
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
            [make_label(m, p, VOCAB, at_max={4: "日", 6: "😀"}) for m, p in zip(marked, promoted, strict=True)],
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
    write_store(out, meta, [_tables(SAE_IDS[0], 0, SAE_IDS[1]), _tables(SAE_IDS[1], 1, SAE_IDS[0])], VOCAB)
    return out
