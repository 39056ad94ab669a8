"""The arms of an evaluation and the rows they need: which features each (arm, strength) point steers with.

Arms: `unsteered`; `intervention` at every sweep strength (at 0 it is the zero-strength control); `negated` (every
strength flipped); `random` (the same edits on features of the same SAE whose max activation is close to the
target's, several sets); with an instruction, `prompt-only` (the instruction prefixed, no steering) and
`prompt+steering`; with a DiffMean source, `diffmean` (a raw mean-difference direction in units of the site's mean
residual norm: qscope.steer.evaluate.diffmean); with candidates (`qscope fix`), `candidate-k`: the k-th other SAE
feature of the request, steered alone over the same sweep. Controls, candidates and DiffMean are not run at
strength 0, where they would repeat the zero-strength row. Every point runs on every prompt with every seed: one
row of batched generation each.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qscope.sae import Sae
from qscope.steer.spec import OFF_MODES, FeatureSteer

UNSTEERED, INTERVENTION, NEGATED, RANDOM = "unsteered", "intervention", "negated", "random"
PROMPT_ONLY, PROMPT_STEER, DIFFMEAN = "prompt-only", "prompt+steering", "diffmean"
ARMS = (UNSTEERED, INTERVENTION, NEGATED, RANDOM, PROMPT_ONLY, PROMPT_STEER, DIFFMEAN)
CANDIDATE = "candidate-"  # + k (1-based): the k-th of the request's candidates, each an arm of its own
POOL = 24  # random controls are drawn from this many features nearest the target's max activation
MAX_COSINE = 0.5  # a control whose decoder direction is this close to the target's is no control


@dataclass(frozen=True)
class Point:
    """One arm at one strength (None for the arms that do not steer); `control` numbers the random sets."""

    arm: str
    strength: float | None
    control: int | None = None

    @property
    def instructed(self) -> bool:
        return self.arm in (PROMPT_ONLY, PROMPT_STEER)


def candidate_arm(k: int) -> str:
    """The arm of the k-th candidate (1-based)."""
    return f"{CANDIDATE}{k}"


def candidate_index(arm: str) -> int | None:
    """The candidate's 0-based index of a candidate arm, None for any other arm."""
    if not arm.startswith(CANDIDATE) or not arm[len(CANDIDATE) :].isdigit():
        return None
    return int(arm[len(CANDIDATE) :]) - 1


def sweep(strengths: Sequence[float], features: Sequence[FeatureSteer]) -> list[float]:
    """The strengths to run, in order, once each; [0, 1] for a spec of ablations only (any s > 0 is the same)."""
    if all(f.mode in OFF_MODES for f in features):
        return [0.0, 1.0]
    return list(dict.fromkeys(float(s) for s in strengths))


def points(
    sweep_: Sequence[float],
    features: Sequence[FeatureSteer],
    n_random: int,
    instructed: bool,
    diffmean: bool = False,
    n_candidates: int = 0,
) -> list[Point]:
    """Every (arm, strength) point of an evaluation, controls, candidates and DiffMean at the non-zero strengths
    only."""
    steered = [s for s in sweep_ if s != 0]
    out = [Point(UNSTEERED, None)] + [Point(INTERVENTION, s) for s in sweep_]
    if any(f.mode not in OFF_MODES for f in features):
        out += [Point(NEGATED, s) for s in steered]
    out += [Point(RANDOM, s, c) for c in range(n_random) for s in steered]
    if instructed:
        out += [Point(PROMPT_ONLY, None)] + [Point(PROMPT_STEER, s) for s in steered]
    out += [Point(candidate_arm(k), s) for k in range(1, n_candidates + 1) for s in steered]
    if diffmean:
        out += [Point(DIFFMEAN, s) for s in steered]
    return out


def at_strength(features: Sequence[FeatureSteer], s: float, negate: bool = False) -> list[FeatureSteer]:
    """The spec's features with strength s (each keeps the sign the spec gave it; flipped when negated); an
    ablation is kept at any s != 0 and dropped at 0."""
    out = []
    for f in features:
        if f.mode in OFF_MODES:
            if s != 0:
                out.append(f)
            continue
        sign = (-1.0 if f.strength < 0 else 1.0) * (-1.0 if negate else 1.0)
        out.append(f.model_copy(update={"strength": sign * s}))
    return out


def point_features(
    point: Point,
    features: Sequence[FeatureSteer],
    controls: Sequence[Sequence[FeatureSteer]],
    candidates: Sequence[FeatureSteer] = (),
) -> list[FeatureSteer]:
    """What one point steers with."""
    if point.strength is None or point.arm == DIFFMEAN:  # DiffMean steers a raw direction, no feature
        return []
    k = candidate_index(point.arm)
    if k is not None:
        return at_strength([candidates[k]], point.strength)
    if point.arm == RANDOM:
        return at_strength(controls[point.control or 0], point.strength)
    return at_strength(features, point.strength, negate=point.arm == NEGATED)


def pick_controls(
    features: Sequence[FeatureSteer], saes: dict[str, Sae], max_acts: Callable[[str], np.ndarray], n: int, seed: int
) -> list[list[FeatureSteer]]:
    """n sets of random controls: in each, every spec feature is replaced by a feature of the same SAE whose
    max activation is among the POOL nearest its own (on a log scale), that fired, is not steered already and
    whose decoder direction is not close to the target's. Deterministic in `seed`."""
    rng = random.Random(seed)
    taken = {(f.sae_id, f.feature) for f in features}
    sets: list[list[FeatureSteer]] = [[] for _ in range(n)]
    for f in features:
        pool = _pool(f, saes[f.sae_id], max_acts(f.sae_id), taken)
        picked = rng.sample(pool, min(n, len(pool)))
        for c in range(n):
            g = picked[c % len(picked)] if picked else f.feature
            sets[c].append(f.model_copy(update={"feature": int(g)}))
    return sets


def _pool(f: FeatureSteer, sae: Sae, max_act_F: np.ndarray, taken: set[tuple[str, int]]) -> list[int]:
    target = float(max_act_F[f.feature]) if f.feature < len(max_act_F) else 0.0
    alive = np.flatnonzero(max_act_F > 0)
    alive = np.array([g for g in alive if (f.sae_id, int(g)) not in taken], dtype=np.int64)
    if not len(alive):
        return []
    distance = np.abs(np.log(max_act_F[alive]) - math.log(target)) if target > 0 else max_act_F[alive]
    near = alive[np.argsort(distance, kind="stable")[: POOL * 2]]
    d_D = sae.decoder_directions[f.feature].float()
    dirs_ND = sae.decoder_directions[torch.as_tensor(near)].float()
    cos_N = (dirs_ND @ d_D) / (dirs_ND.norm(dim=-1) * d_D.norm()).clamp_min(1e-12)
    return [int(g) for g, c in zip(near, cos_N.tolist(), strict=True) if abs(c) < MAX_COSINE][:POOL]
