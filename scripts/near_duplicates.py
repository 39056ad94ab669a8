"""Count the top contexts of a feature store that are near-identical to a stronger top context of the same
feature (the test of qscope.harvest.dedup: aligned on the marked token, sharing at least THRESHOLD of the
positions either covers), as the store holds them. Measures a store harvested with or without --dedup.

    .venv/bin/python scripts/near_duplicates.py data/mini-Qwen.duckdb [more.duckdb ...] [--before 32 --after 8]
"""

from __future__ import annotations

import argparse

import duckdb
import numpy as np
import torch

from qscope.harvest.dedup import _similarity

THRESHOLD = 0.8  # HarvestOptions.dedup's default


def aligned(rows: list[tuple], before: int, after: int) -> np.ndarray:
    """[E, before + 1 + after] token ids around each context's marked token, -1 outside the context."""
    out = np.full((len(rows), before + 1 + after), -1, dtype=np.int64)
    for e, (pos, ids) in enumerate(rows):
        ids = np.asarray(ids, dtype=np.int64)
        lo, hi = max(0, pos - before), min(len(ids), pos + after + 1)
        out[e, lo - pos + before : hi - pos + before] = ids[lo:hi]
    return out


def count(path: str, before: int, after: int) -> tuple[int, int, int]:
    """(top contexts, near-identical to a stronger one, features with any)."""
    con = duckdb.connect(path, read_only=True)
    rows = con.execute(
        "SELECT sae_id, feature, pos, token_ids FROM contexts WHERE kind = 'top' ORDER BY sae_id, feature, rank"
    ).fetchall()
    groups: dict[tuple[str, int], list[tuple]] = {}
    for sae_id, feature, pos, ids in rows:
        groups.setdefault((sae_id, feature), []).append((pos, ids))
    dup = features = 0
    for contexts in groups.values():
        if len(contexts) > 1:
            sim_PP = _similarity(torch.from_numpy(aligned(contexts, before, after))[None])[0]
            n = int(torch.triu(sim_PP >= THRESHOLD, diagonal=1).any(0).sum())  # j near a stronger i < j
            dup, features = dup + n, features + (n > 0)
    return len(rows), dup, features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="+")
    p.add_argument("--before", type=int, default=32, help="the harvest's --before")
    p.add_argument("--after", type=int, default=8, help="the harvest's --after")
    args = p.parse_args()
    for path in args.stores:
        n, dup, features = count(path, args.before, args.after)
        print(f"{path}: {n:,} top contexts, {dup:,} near-identical to a stronger one, in {features:,} features")


if __name__ == "__main__":
    main()
