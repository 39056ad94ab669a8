"""The DiffMean arm of an evaluation: a steering vector from two sets of texts, added to the residual like a
feature's decoder direction, as the simple method the SAE feature is judged against (AxBench's DiffMean).

- The sets: a saved discovery's train split (set A with the concept, set B without), or two prompt lists given
  with the request; each text tokenized without special tokens (as discover does), cut to the steering prompt limit.
- The direction: at the site of the first steered feature's SAE, mean(residual | with) - mean(residual | without),
  each text's residual averaged over its counted tokens (qscope.residual: the same pooling and mean difference as
  discover's DiffMean baseline), then made a unit vector.
- The unit of strength: the mean residual norm at that site over the counted tokens of the evaluation's own
  prompts (measured here, unsteered, not read from the store), so strength s adds s x that norm along the
  direction: added for the goal `increase`, subtracted for `decrease`.

Shapes: B texts in a batch, T positions, D = d_model, E texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from qscope.model import capture
from qscope.residual import counted_mask, mean_difference, pooled_mean
from qscope.steer.edits import Edit, unit_direction
from qscope.steer.evaluate.arms import DIFFMEAN, Point
from qscope.steer.evaluate.result import DiffMeanInfo
from qscope.steer.spec import SpecError

BATCH = 16  # texts per forward

SetsOf = Callable[[str], tuple[list[str], list[str]] | None]  # discovery id -> (with, without); None: no such


@dataclass
class DiffMeanSets:
    """The two tokenized sets and where they came from (prepared with the plan, run by `direction_work`)."""

    with_ids: list[list[int]]
    without_ids: list[list[int]]
    sae_id: str  # the arm steers at this SAE's site
    source: str
    discovery: str | None = None


@dataclass
class DiffMeanArm:
    info: DiffMeanInfo
    vector_D: torch.Tensor  # unit, in the SAE's dtype and device


def tokenize_sets(tokenizer, with_texts: Sequence[str], without_texts: Sequence[str], max_tokens: int):
    """(with ids, without ids, how many texts were cut to max_tokens); SpecError for a text of no token."""
    out, cut = [], 0
    for name, texts in (("with_concept", with_texts), ("without_concept", without_texts)):
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        for i, x in enumerate(ids):
            if not x:
                raise SpecError(f"diffmean: {name} text {i + 1} is empty once tokenized")
        cut += sum(len(x) > max_tokens for x in ids)
        out.append([list(x[:max_tokens]) for x in ids])
    return out[0], out[1], cut


@torch.no_grad()
def site_residuals(
    model, site: str, ids: Sequence[Sequence[int]], skip_first: bool, sink_norm_ratio: float, pad_id: int, lock, yield_
) -> tuple[np.ndarray, float, int]:
    """Each text's residual at `site` pooled over its counted tokens [E, D], and the sum and count of the counted
    tokens' norms (for the mean residual norm)."""
    pooled, norm_sum, n_tokens = [], 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        lengths = [len(x) for x in chunk]
        input_BT = torch.full((len(chunk), max(lengths)), pad_id, dtype=torch.long)
        mask_BT = torch.zeros_like(input_BT)
        for b, x in enumerate(chunk):
            input_BT[b, : len(x)] = torch.tensor(x)
            mask_BT[b, : len(x)] = 1
        with lock or nullcontext():
            h_BTD = capture(model, [site], input_BT.to(device), mask_BT.to(device))[site]
        counted_BT = counted_mask(h_BTD, lengths, skip_first, sink_norm_ratio)
        pooled.append(pooled_mean(h_BTD, counted_BT).cpu().numpy())
        norm_sum += float((h_BTD.float().norm(dim=-1) * counted_BT).sum())
        n_tokens += int(counted_BT.sum())
        yield_()
    return np.concatenate(pooled), norm_sum, n_tokens


def direction(
    sets: DiffMeanSets,
    prompt_ids: Sequence[Sequence[int]],
    target,
    goal: str,
    first_feature: int,
    yield_: Callable[[], None],
) -> DiffMeanArm:
    """The arm's unit direction and its figures, on `target`'s model (see the module docstring)."""
    sae = target.saes[sets.sae_id]
    site = sae.require_site()
    tok = target.lm.require_tokenizer()
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    run = lambda ids: site_residuals(  # noqa: E731
        target.lm.model, site, ids, target.skip_first, target.sink_norm_ratio, pad, target.lock, yield_
    )
    H_ED, _, _ = run(sets.with_ids + sets.without_ids)
    y_E = np.array([1] * len(sets.with_ids) + [0] * len(sets.without_ids))
    d_D = mean_difference(H_ED, y_E)
    _, norm_sum, n_tokens = run(list(prompt_ids))
    norm = float(np.linalg.norm(d_D))
    vector_D = torch.from_numpy(d_D).to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    feature_D = unit_direction(sae, first_feature).float()
    cosine = float(feature_D @ vector_D.float()) / max(norm, 1e-12) if norm > 0 else None
    info = DiffMeanInfo(
        site=site,
        sae_id=sets.sae_id,
        source=sets.source,
        discovery=sets.discovery,
        n_with=len(sets.with_ids),
        n_without=len(sets.without_ids),
        residual_norm=norm_sum / max(n_tokens, 1),
        direction_norm=norm,
        sign=1.0 if goal == "increase" else -1.0,
        cosine=cosine,
    )
    return DiffMeanArm(info, vector_D)


def edits(arm: DiffMeanArm, sae, points: Sequence[Point]) -> dict[Point, dict[str, list[Edit]]]:
    """The edits of every DiffMean point: an add of sign x strength x residual norm along the unit direction."""
    site, unit = sae.require_site(), arm.info.sign * arm.info.residual_norm
    return {
        p: {site: [Edit(sae, -1, "add", unit * (p.strength or 0.0), 0, arm.vector_D)]}
        for p in points
        if p.arm == DIFFMEAN
    }
