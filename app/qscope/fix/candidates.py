"""The candidates of a fix, chosen from a discovery, and the one steering evaluation that runs them all.

- Candidates: per SAE, its `per_sae` top features for set A (the discovery's A side, ranked by train AUROC; a
  feature the feature store never saw fire is skipped: its strength would have no unit). The first candidate is
  the discovery's top feature overall: it is the evaluation's SAE intervention (the arm the verdict and the
  controls are built around), the others are its `candidate-k` arms. Each is added along its decoder direction,
  at +strength to increase the behaviour and -strength to decrease it.
- The concept the evaluation reads back on the outputs is that top feature: the feature that best told A from B
  on held-out examples among those ranked on train.
- The DiffMean arm: the discovery's train split (A with the behaviour, B without), at the top feature's site.
- Prompts: the given ones, else the held-out test split of the set the goal starts from (B, without the
  behaviour, to increase it; A to decrease it), or the whole test split when that set has fewer than 2; each cut
  to its first PROMPT_CHARS characters, at most max_prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qscope.discover.discovery import Discovery
from qscope.discover.ranking import FeatureScore
from qscope.fix.request import PROMPT_CHARS, FixSettings
from qscope.steer.evaluate.request import ConceptFeature, DiffMeanSource, EvalRequest
from qscope.steer.spec import FeatureSteer, SteerSpec

Alive = Callable[[str, int], bool]  # (sae_id, feature) -> whether the feature store saw it fire


def choose(a_side: Sequence[FeatureScore], sae_ids: Sequence[str], per_sae: int, alive: Alive) -> list[FeatureScore]:
    """The top `per_sae` live features of each SAE from the A side (in its order), the overall top one first."""
    picked: list[FeatureScore] = []
    taken = {s: 0 for s in sae_ids}
    for score in a_side:
        if taken.get(score.sae_id, per_sae) >= per_sae or not alive(score.sae_id, score.feature):
            continue
        taken[score.sae_id] += 1
        picked.append(score)
    return picked


def prompts_of(d: Discovery, s: FixSettings) -> tuple[list[str], str]:
    """The evaluation's prompts and where they came from, in words."""
    if s.prompts is not None:
        given = [p for p in s.prompts if p.strip()][: s.max_prompts]
        return given, f"{len(given)} prompts given"
    start = 0 if s.goal == "increase" else 1  # label 1: set A (with the behaviour)
    test = [e for e in d.examples if e.split == "test"]
    side = [e for e in test if e.label == start]
    name = d.names[0] if start == 1 else d.names[1]
    chosen, source = (
        (side, f"the held-out test examples of {name!r}") if len(side) >= 2 else (test, "the held-out test split")
    )
    texts = [e.text[:PROMPT_CHARS] for e in chosen][: s.max_prompts]
    return texts, f"{source}: {len(texts)} of {len(chosen)}, each cut to {PROMPT_CHARS} characters"


def eval_request(
    d: Discovery, picked: Sequence[FeatureScore], prompts: list[str], s: FixSettings, seed: int
) -> EvalRequest:
    """One evaluation of every candidate and DiffMean (its sets: the discovery's train split, read by id)."""
    sign = 1.0 if s.goal == "increase" else -1.0
    steers = [FeatureSteer(sae_id=c.sae_id, feature=c.feature, mode="add", strength=sign) for c in picked]
    top = picked[0]
    spec = SteerSpec(
        model_id=d.model_id,
        features=steers[:1],
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        seed=seed,
    )
    return EvalRequest(
        spec=spec,
        prompts=prompts,
        strengths=list(s.strengths),
        seeds=s.seeds,
        random_controls=s.random_controls,
        goal=s.goal,
        concept=ConceptFeature(sae_id=top.sae_id, feature=top.feature),
        measure="reads",
        max_ppl_ratio=s.max_ppl_ratio,
        diffmean=DiffMeanSource(discovery=d.id or "this discovery"),
        candidates=steers[1:],
    )


def train_sets(d: Discovery) -> tuple[list[str], list[str]]:
    """The discovery's train texts of set A and of set B (the DiffMean arm's sets)."""
    train = [e for e in d.examples if e.split == "train"]
    return [e.text for e in train if e.label == 1], [e.text for e in train if e.label == 0]
