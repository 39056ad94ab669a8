"""Search by running the model: the features strongest on a text relative to their harvested max."""

from __future__ import annotations

import numpy as np

from qscope.live.runner import TextRun
from qscope.store.queries import Store


def strongest(run: TextRun, store: Store, n: int) -> list[tuple[str, int, float, float, int]]:
    """(sae_id, feature, act, act / harvested max, pos) of the n features strongest relative to their max,
    over the ranked tokens of a run."""
    best: dict[tuple[str, int], tuple[float, int]] = {}
    ranked = np.asarray(run.ranked, dtype=bool)
    for a in run.acts:
        keep = ranked[a.pos] if len(a.pos) else np.zeros(0, bool)
        for pos, f, act in zip(a.pos[keep], a.feature[keep], a.act[keep], strict=True):
            key = (a.sae_id, int(f))
            if act > best.get(key, (0.0, 0))[0]:
                best[key] = (float(act), int(pos))
    if not best:
        return []
    with store.reader() as r:
        rows = r.rows(list(best))
    out = []
    for (sae_id, f), (act, pos) in best.items():
        max_act = rows[(sae_id, f)].max_act if (sae_id, f) in rows else 0.0
        out.append((sae_id, f, act, act / max_act if max_act > 0 else 0.0, pos))
    out.sort(key=lambda o: -o[3])
    return out[:n]
