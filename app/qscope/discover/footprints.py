"""Dataset footprints and their comparison, pure numpy.

A dataset's footprint is a set of features, chosen one of two ways:
- by examples: the features that fire (on some counted token) on at least `share` of its examples;
- by mass: the fewest features that together carry at least `share` of its activation mass (all activation summed
  over all counted tokens), largest first.

Comparing footprints A and B: overlap is |A and B| / |A or B| (Jaccard); coverage of A by B is |A and B| / |A| (how
much of A's footprint B also activates); the mass-weighted coverage counts each feature of A by its share of A's
mass. The features only one side has are listed with their shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

By = Literal["examples", "mass"]


@dataclass
class Stats:
    """Per feature (all SAEs side by side, `keys` naming the columns) of one dataset."""

    name: str
    keys: list[tuple[str, int]]
    fire_share: np.ndarray  # float64 [F] share of the examples it fires on
    mass_share: np.ndarray  # float64 [F] share of the dataset's activation mass it carries
    n_examples: int
    n_tokens: int


def stats(
    name: str, fired: dict[str, np.ndarray], mass: dict[str, np.ndarray], n_examples: int, n_tokens: int
) -> Stats:
    """Stats from per-SAE counts (examples fired on) and sums (activation mass)."""
    keys = [(sae_id, f) for sae_id, counts in fired.items() for f in range(len(counts))]
    fired_F = np.concatenate([np.asarray(fired[s], np.float64) for s in fired]) if fired else np.zeros(0)
    mass_F = np.concatenate([np.asarray(mass[s], np.float64) for s in fired]) if fired else np.zeros(0)
    total = mass_F.sum()
    return Stats(
        name, keys, fired_F / max(n_examples, 1), mass_F / total if total > 0 else mass_F * 0, n_examples, n_tokens
    )


def members(s: Stats, by: By, share: float) -> np.ndarray:
    """bool [F]: the features in the footprint."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if by == "examples":
        return s.fire_share >= share
    order = np.argsort(-s.mass_share, kind="stable")
    before = np.cumsum(s.mass_share[order]) - s.mass_share[order]  # mass carried by the larger ones
    out = np.zeros(len(order), dtype=bool)
    out[order[(before < share - 1e-12) & (s.mass_share[order] > 0)]] = True
    return out


@dataclass
class FeatureShare:
    sae_id: str
    feature: int
    fire_a: float
    fire_b: float
    mass_a: float
    mass_b: float
    label: str = ""


@dataclass
class SaeOverlap:
    sae_id: str
    size_a: int
    size_b: int
    shared: int
    overlap: float | None


@dataclass
class FootprintComparison:
    name_a: str
    name_b: str
    by: str
    share: float
    size_a: int
    size_b: int
    shared: int
    overlap: float | None  # Jaccard; None when both footprints are empty
    a_covered_by_b: float | None  # None when A's footprint is empty
    b_covered_by_a: float | None
    a_covered_by_b_mass: float | None  # weighted by A's mass shares
    b_covered_by_a_mass: float | None
    n_examples_a: int
    n_examples_b: int
    per_sae: list[SaeOverlap] = field(default_factory=list)
    only_a: list[FeatureShare] = field(default_factory=list)  # largest share (of A) first
    only_b: list[FeatureShare] = field(default_factory=list)
    both: list[FeatureShare] = field(default_factory=list)
    n_only_a: int = 0
    n_only_b: int = 0


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def compare(a: Stats, b: Stats, by: By = "examples", share: float = 0.2, top: int = 50) -> FootprintComparison:
    """The comparison of A's and B's footprints (same features in the same order on both sides)."""
    if a.keys != b.keys:
        raise ValueError("the two datasets were run through different SAEs: their footprints cannot be compared")
    in_a, in_b = members(a, by, share), members(b, by, share)
    both, either = in_a & in_b, in_a | in_b
    weight_a, weight_b = (a.fire_share, b.fire_share) if by == "examples" else (a.mass_share, b.mass_share)
    return FootprintComparison(
        name_a=a.name,
        name_b=b.name,
        by=by,
        share=share,
        size_a=int(in_a.sum()),
        size_b=int(in_b.sum()),
        shared=int(both.sum()),
        overlap=_ratio(both.sum(), either.sum()),
        a_covered_by_b=_ratio(both.sum(), in_a.sum()),
        b_covered_by_a=_ratio(both.sum(), in_b.sum()),
        a_covered_by_b_mass=_ratio(a.mass_share[both].sum(), a.mass_share[in_a].sum()),
        b_covered_by_a_mass=_ratio(b.mass_share[both].sum(), b.mass_share[in_b].sum()),
        n_examples_a=a.n_examples,
        n_examples_b=b.n_examples,
        per_sae=_per_sae(a.keys, in_a, in_b),
        only_a=_listed(a, b, in_a & ~in_b, weight_a, top),
        only_b=_listed(a, b, in_b & ~in_a, weight_b, top),
        both=_listed(a, b, both, weight_a + weight_b, top),
        n_only_a=int((in_a & ~in_b).sum()),
        n_only_b=int((in_b & ~in_a).sum()),
    )


def _listed(a: Stats, b: Stats, mask: np.ndarray, weight: np.ndarray, top: int) -> list[FeatureShare]:
    idx = np.flatnonzero(mask)
    idx = idx[np.argsort(-weight[idx], kind="stable")][:top]
    return [
        FeatureShare(
            a.keys[i][0],
            int(a.keys[i][1]),
            float(a.fire_share[i]),
            float(b.fire_share[i]),
            float(a.mass_share[i]),
            float(b.mass_share[i]),
        )
        for i in idx
    ]


def _per_sae(keys: list[tuple[str, int]], in_a: np.ndarray, in_b: np.ndarray) -> list[SaeOverlap]:
    sae_of = np.array([k[0] for k in keys]) if keys else np.zeros(0, dtype=str)
    out = []
    for sae_id in dict.fromkeys(k[0] for k in keys):
        m = sae_of == sae_id
        a, b = in_a & m, in_b & m
        out.append(
            SaeOverlap(sae_id, int(a.sum()), int(b.sum()), int((a & b).sum()), _ratio((a & b).sum(), (a | b).sum()))
        )
    return out


@dataclass
class FootprintSummary:
    """One dataset's footprint on its own."""

    name: str
    by: str
    share: float
    size: int
    n_examples: int
    per_sae: list[SaeOverlap] = field(default_factory=list)  # size_b, shared and overlap unused (0 / None)
    top: list[FeatureShare] = field(default_factory=list)  # its features, largest share first


def summarize(s: Stats, by: By = "examples", share: float = 0.2, top: int = 50) -> FootprintSummary:
    inside = members(s, by, share)
    weight = s.fire_share if by == "examples" else s.mass_share
    zeros = np.zeros(len(s.keys))
    empty = Stats("", s.keys, zeros, zeros, 0, 0)
    return FootprintSummary(
        s.name,
        by,
        share,
        int(inside.sum()),
        s.n_examples,
        [SaeOverlap(p.sae_id, p.size_a, 0, 0, None) for p in _per_sae(s.keys, inside, zeros > 0)],
        _listed(s, empty, inside, weight, top),
    )
