"""The DiffMean arm on the tiny default: its direction and its unit equal a plain computation (one text at a time,
no batching or padding), it steers the output, and the arms are compared in the result, its Markdown and from a
discovery's train sets."""

import numpy as np
import pytest
import torch

from qscope.model import hooks
from qscope.steer.evaluate.markdown import to_markdown
from qscope.steer.evaluate.plan import prepare
from qscope.steer.evaluate.prompt_sets import SETS, builtin
from qscope.steer.evaluate.request import DiffMeanSource, EvalLimits, EvalRequest
from qscope.steer.evaluate.run import execute, inline
from qscope.steer.evaluate.suggest import suggest
from qscope.steer.spec import SpecError, SteerLimits, SteerSpec
from tests.helpers.evaluations import IDENT

CODE, PROSE = SETS["prose-to-code"].probe, SETS["prose"].prompts


@pytest.fixture(scope="module")
def evaluated(target):
    chosen = suggest(target, SETS["prose-to-code"])
    spec = SteerSpec(features=[chosen], temperature=0.8, max_new_tokens=8, seed=1)
    source = DiffMeanSource(with_concept=CODE, without_concept=PROSE[6:])
    req = EvalRequest(spec=spec, prompts=PROSE[:4], strengths=[0, 0.5, 2], seeds=1, random_controls=1, diffmean=source)
    plan = prepare(req, target, EvalLimits(), SteerLimits(), builtin())
    return plan, execute(plan, target, inline, IDENT)


@torch.no_grad()
def plain_pooled(target, site: str, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One text alone: its residual at `site` averaged over the tokens that count (not position 0, not a sink
    above 10x the median norm), and those tokens' norms."""
    seen = {}
    with hooks(target.lm.model, {site: lambda h: seen.__setitem__("h", h)}):
        target.lm.model(input_ids=torch.tensor([ids]))
    h = seen["h"][0].float()
    norms = h.norm(dim=-1)
    keep = norms <= 10 * norms.median()
    keep[0] = len(ids) == 1
    return h[keep].mean(0).numpy(), norms[keep].numpy()


def test_the_direction_and_its_unit_equal_a_plain_computation(target, evaluated):
    plan, result = evaluated
    dm = result.diffmean
    assert dm is not None and (dm.n_with, dm.n_without) == (len(CODE), len(PROSE[6:]))
    assert dm.source == "two prompt sets given" and dm.sign == 1.0
    site = target.saes[plan.concept.sae_id].require_site()
    assert dm.site == site
    with_mean = np.mean([plain_pooled(target, site, x)[0] for x in plan.diffmean.with_ids], axis=0)
    without_mean = np.mean([plain_pooled(target, site, x)[0] for x in plan.diffmean.without_ids], axis=0)
    assert dm.direction_norm == pytest.approx(float(np.linalg.norm(with_mean - without_mean)), rel=1e-4)
    norms = np.concatenate([plain_pooled(target, site, x)[1] for x in plan.prompt_ids])
    assert dm.residual_norm == pytest.approx(float(norms.mean()), rel=1e-4)
    d = torch.from_numpy(with_mean - without_mean)
    dec = target.saes[plan.concept.sae_id].decoder_directions[plan.request.spec.features[0].feature].float()
    assert dm.cosine == pytest.approx(float(dec @ d / (dec.norm() * d.norm())), abs=1e-4)


def test_the_arm_is_swept_steers_and_is_compared(target, evaluated):
    plan, result = evaluated
    arms = [(p.arm, p.strength) for p in result.table]
    assert ("diffmean", 0.5) in arms and ("diffmean", 2.0) in arms and ("diffmean", 0.0) not in arms
    assert len(result.rows) == 4 * (1 + 3 + 2 + 2 + 2)  # prompts x (unsteered, sweep, negated, random, diffmean)
    base = {r.prompt: r.token_ids for r in result.rows if r.arm == "unsteered"}
    strong = [r for r in result.rows if r.arm == "diffmean" and r.strength == 2.0]
    assert sum(r.token_ids != base[r.prompt] for r in strong) >= 3  # 2x the residual norm moves the text
    c = result.comparison
    assert c is not None and {b.arm for b in c.arms} == {"unsteered", "intervention", "negated", "random", "diffmean"}
    assert c.sentence and "DiffMean" in c.sentence and c.best in {b.arm for b in c.arms}
    md = to_markdown(result, "t")
    assert "## Arms compared" in md and "| diffmean | 2 |" in md and "DiffMean arm: mean(residual | with)" in md


def test_a_discovery_gives_its_train_sets_and_bad_sources_are_refused(target):
    chosen = suggest(target, SETS["prose-to-code"])
    spec = SteerSpec(features=[chosen], temperature=0, max_new_tokens=4)
    sets = {"d1": (list(CODE), list(PROSE)), "long": (["x" * 3000, "y"], list(PROSE))}

    def plan_of(source: DiffMeanSource, limits: EvalLimits | None = None):
        limits = limits or EvalLimits()
        req = EvalRequest(spec=spec, prompts=PROSE[:2], strengths=[0, 1], random_controls=0, diffmean=source)
        return prepare(req, target, limits, SteerLimits(), builtin(), sets.get)

    plan = plan_of(DiffMeanSource(discovery="d1"), EvalLimits(max_prompts=8))
    assert plan.diffmean is not None and plan.diffmean.discovery == "d1"
    assert len(plan.diffmean.with_ids) == 6 and len(plan.diffmean.without_ids) == 8  # cut to max_prompts
    assert plan.request.diffmean.discovery is None and plan.request.diffmean.without_concept == PROSE[:8]
    assert any("the first 8 were used" in n for n in plan.notes)
    plan = plan_of(DiffMeanSource(discovery="long"))  # a discovery's long example is cut, not refused
    assert [len(t) for t in plan.request.diffmean.with_concept] == [2000, 1]
    assert any("1 of the discovery's texts cut to 2,000 characters" in n for n in plan.notes)
    for source, says in [
        (DiffMeanSource(discovery="nope"), "no discovery 'nope'"),
        (DiffMeanSource(), "give either a discovery id or both"),
        (DiffMeanSource(discovery="d1", with_concept=CODE), "not both"),
        (DiffMeanSource(with_concept=CODE), "without_concept is missing"),
        (DiffMeanSource(with_concept=CODE, without_concept=["one"]), "without_concept has 1 non-blank texts"),
        (DiffMeanSource(with_concept=CODE, without_concept=["x" * 3000, "y"]), "at most 2,000 (max_prompt_chars)"),
    ]:
        with pytest.raises(SpecError, match=".*" + says.replace("(", r"\(").replace(")", r"\)")):
            plan_of(source)
