"""Near-duplicate top contexts count once (qscope.harvest.dedup): the pure selection on hand-set windows, and the
real harvest on a corpus that repeats passages, with and without the setting."""

import json
from pathlib import Path

import duckdb
import pytest
import torch

from qscope.harvest.dedup import _greedy, aligned_windows, distinct
from qscope.harvest.options import HarvestError, HarvestOptions


def test_aligned_windows_mark_positions_outside_the_window() -> None:
    windows_NT = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]], dtype=torch.int32)
    ids = aligned_windows(windows_NT, torch.tensor([1, 0]), torch.tensor([0, 2]), before=2, after=1)
    assert ids.tolist() == [[-1, -1, 20, 21], [10, 11, 12, 13]]


def test_distinct_keeps_the_strongest_of_each_near_identical_group() -> None:
    a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    near_a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 99]  # 9 of 10 shared
    b = [50, 51, 52, 53, 54, 55, 56, 57, 58, 59]
    half_b = [50, 51, 52, 53, 54, 0, 0, 0, 0, 0]  # 5 of 10 shared
    feature = torch.tensor([0, 0, 0, 0, 1, 1])
    ids = torch.tensor([a, near_a, b, half_b, a, a])
    assert distinct(feature, ids, 0.8, keep=10).tolist() == [True, False, True, True, True, False]
    assert distinct(feature, ids, 0.95, keep=10).tolist() == [True, True, True, True, True, False]
    assert distinct(feature, ids, 0.8, keep=2).tolist() == [True, False, True, False, True, False]
    # a context near only to a dropped one stays: dropped contexts make nothing a duplicate
    chain = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 8, 9]])
    assert distinct(torch.zeros(3, dtype=torch.long), chain, 0.75, keep=5).tolist() == [True, False, True]
    assert distinct(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long), 0.8, 5).tolist() == []


def test_the_block_filter_misses_no_near_duplicate() -> None:
    """Only features whose contexts share a whole block of positions are compared pairwise: the same result as
    comparing every pair, on contexts with planted copies that differ in up to 8 of 41 positions (the most
    that still shares 80%)."""
    g = torch.Generator().manual_seed(1)
    F, P, W = 60, 12, 41
    ids = torch.randint(0, 50, (F * P, W), generator=g)
    for f in range(0, F, 3):
        for j in range(1, 4):
            row = ids[f * P].clone()
            row[torch.randperm(W, generator=g)[: (f + j) % 9]] = 1000 + j
            ids[f * P + j] = row
    feature = torch.arange(F).repeat_interleave(P)
    kept = distinct(feature, ids, 0.8, 8)
    assert torch.equal(kept, _greedy(feature, ids, 0.8, 8))
    assert 20 <= int((~kept[feature % 3 == 0]).sum())  # the planted copies went (and the cap of 8 per feature)
    assert int(kept.reshape(F, P).sum(1).max()) == 8


def test_dedup_must_be_a_fraction(tmp_path: Path) -> None:
    opts = HarvestOptions(model="m", saes=[tmp_path], corpus="c", out=tmp_path / "x.duckdb", dedup=1.5)
    with pytest.raises(HarvestError, match="--dedup"):
        opts.validate()
    assert HarvestOptions(model="m", saes=[], corpus="c", out=Path("x"), top_k=10).top_pool == 15
    assert HarvestOptions(model="m", saes=[], corpus="c", out=Path("x"), top_k=10, dedup=0).top_pool == 10


REPEATED = (
    "0x00 0x01 0x02 0x03 0x04 0x05 0x06 0x07 0x08 0x09 0x0a 0x0b 0x0c 0x0d 0x0e 0x0f\n"
    "+--------+--------+--------+--------+--------+--------+--------+\n"
    "| offset |  hex   |  hex   |  hex   |  hex   |  hex   | ascii  |\n"
)


def _harvest(tiny_demo: Path, corpus: Path, out: Path, dedup: float) -> Path:
    from rich.console import Console

    from qscope.harvest.run import harvest

    opts = HarvestOptions(
        model=str(tiny_demo / "model"),
        saes=[tiny_demo / "saes"],
        corpus=str(corpus),
        out=out,
        tokens=6144,
        top_k=8,
        dedup=dedup,
        device="cpu",
        checkpoint_every=0,
    )
    harvest(opts, Console(quiet=True))
    return out


def _top_windows(db: Path) -> dict[tuple[str, int], list[list[int]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT sae_id, feature, token_ids, pos FROM contexts WHERE kind = 'top' ORDER BY sae_id, feature, rank"
        ).fetchall()
    out: dict[tuple[str, int], list[list[int]]] = {}
    for sae_id, feature, ids, pos in rows:  # aligned on the marked token, 32 before and 8 after
        out.setdefault((sae_id, feature), []).append([-1] * (32 - pos) + list(ids) + [-1] * (8 - (len(ids) - pos - 1)))
    return out


def _near_pairs(windows: list[list[int]], threshold: float) -> int:
    ids = torch.tensor(windows)
    kept = distinct(torch.zeros(len(windows), dtype=torch.long), ids, threshold, keep=len(windows))
    return int((~kept).sum())


@pytest.mark.slow
def test_a_corpus_with_repeated_passages_gives_distinct_top_contexts(tiny_demo, tmp_path) -> None:
    val = [json.loads(line)["text"] for line in (tiny_demo / "corpus" / "val.jsonl").read_text().splitlines()]
    docs = [REPEATED * 3 if i % 2 else val[i % len(val)] for i in range(60)]  # the same passage 30 times
    corpus = tmp_path / "repeated.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    plain = _top_windows(_harvest(tiny_demo, corpus, tmp_path / "plain.duckdb", 0.0))
    deduped = _top_windows(_harvest(tiny_demo, corpus, tmp_path / "dedup.duckdb", 0.8))

    dup_plain = {key: _near_pairs(w, 0.8) for key, w in plain.items()}
    assert sum(n > 0 for n in dup_plain.values()) > 10  # without the setting, many features repeat the passage
    assert all(_near_pairs(w, 0.8) == 0 for w in deduped.values())  # with it, none does
    assert all(len(w) <= 8 for w in deduped.values())
    # a feature that repeated itself keeps more distinct contexts than before (the pool refills it)
    gained = [k for k, n in dup_plain.items() if n and len(deduped.get(k, [])) > len(plain[k]) - n]
    assert gained
    # the strongest context of every feature is the same either way
    assert all(deduped[k][0] == w[0] for k, w in plain.items() if k in deduped)
