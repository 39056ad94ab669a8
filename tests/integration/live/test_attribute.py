"""Attribution math (qscope.live.attribute) and the steering pieces it relies on (replay, suppression from a
position), on the tiny default: mini-Qwen with SAEs at layers 0 and 1, both hooked at once."""

import copy
import json
import random

import pytest
import torch

from qscope.live.attribute import AttributionError, AttributionTarget, Change, attribute, target_value
from qscope.model import hooks, load_model
from qscope.sae import find_sae_files, load_sae
from qscope.steer.edits import Edit
from qscope.steer.engine import Row, generate
from qscope.steer.replay import replay_hooks

F32_EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def tiny(tiny_demo, one_torch_thread):
    lm = load_model(tiny_demo / "model", device="cpu")
    saes = {f"layer{s.layer}": s for s in (load_sae(p) for p in find_sae_files(tiny_demo / "saes"))}
    assert len(saes) == 2
    return lm, saes


@pytest.fixture(scope="module")
def tiny64(tiny):
    """The same model and SAEs in float64, where a finite difference is exact to many digits."""
    lm, saes = tiny
    return copy.deepcopy(lm.model).double(), {k: copy.deepcopy(s).double() for k, s in saes.items()}


@pytest.fixture(scope="module")
def texts(tiny_demo):
    lines = (tiny_demo / "corpus" / "val.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines[:40]]


def ids(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


PROMPT = "The cat sat on the mat because it was warm, and the dog"


def test_hooks_leave_the_forward_pass_alone(tiny):
    lm, saes = tiny
    p = ids(lm, PROMPT)
    plain = lm.model(torch.tensor([p]), logits_to_keep=1).logits[0, -1]  # the LM head on the last row, as here
    target = AttributionTarget(int(plain.argmax()), int(plain.argmin()))
    att = attribute(lm.model, saes, p, target)
    assert att.logit == float(plain[target.token]) and att.contrast_logit == float(plain[target.contrast])
    assert att.value == pytest.approx(float(plain[target.token] - plain[target.contrast]), abs=1e-5)
    assert target_value(lm.model, saes, p, target) == pytest.approx(att.value, abs=1e-5)
    assert att.top_ids[0] == target.token and att.prob == pytest.approx(att.top_probs[0])


def test_attribution_equals_the_finite_difference_through_the_same_hook(tiny, tiny64):
    """Central differences with the activation nudged by 1% of itself. The float64 model still normalises
    (RMSNorm) and rotates (RoPE) in float32, so y carries float32 rounding, a few ulps of |y|; over the nudge that
    bounds the difference's error (atol), and the curvature over 1% adds less than 1e-3 of the value (rtol)."""
    lm, _ = tiny
    model, saes = tiny64
    p = ids(lm, PROMPT)
    target = AttributionTarget(ids(lm, " was")[0])
    att = attribute(model, saes, p, target)
    checked = 0
    for s in att.saes:  # both SAEs: the earlier one's gradient passes through the later one's hook
        order = sorted(range(len(s.attr)), key=lambda j: -abs(s.attr[j]))
        for j in order[:4] + order[10:12] + order[40:41]:
            pos, feature, act = int(s.pos[j]), int(s.feature[j]), float(s.act[j])
            eps = 0.01 * act
            up, down = (
                target_value(model, saes, p, target, Change(s.sae_id, feature, add=d, positions=(pos,)))
                for d in (eps, -eps)
            )
            fd = act * (up - down) / (2 * eps)
            atol = act / eps * 8 * F32_EPS * abs(att.value)
            assert s.attr[j] == pytest.approx(fd, rel=1e-3, abs=atol), (s.sae_id, pos, feature)
            assert abs(s.attr[j]) > 10 * atol or j not in order[:4]  # the largest are checked to 1e-3 of themselves
            checked += 1
    assert checked == 14
    assert all(abs(s.features) > 1e-3 for s in att.saes)  # no SAE cut off from the target


def test_float32_attributions_agree_with_float64(tiny, tiny64):
    lm, saes = tiny
    model64, saes64 = tiny64
    p = ids(lm, PROMPT)
    target = AttributionTarget(ids(lm, " was")[0], ids(lm, " is")[0])
    at32, at64 = attribute(lm.model, saes, p, target), attribute(model64, saes64, p, target)
    for a32, a64 in zip(at32.saes, at64.saes, strict=True):
        assert (a32.pos == a64.pos).all() and (a32.feature == a64.feature).all()
        scale = abs(a64.attr).max()
        # float32 through a few layers: a few hundred ulps of the largest attribution
        torch.testing.assert_close(
            torch.from_numpy(a32.attr), torch.from_numpy(a64.attr), rtol=0, atol=float(2000 * F32_EPS * scale)
        )


def test_site_terms_sum_to_h_dot_gradient(tiny64, tiny):
    lm, _ = tiny
    model, saes = tiny64
    p = ids(lm, PROMPT)
    target = AttributionTarget(ids(lm, " was")[0])
    seen = {}

    def leaf(h_BTD):
        seen["h"] = h_BTD.detach().requires_grad_(True)
        return seen["h"]

    for sae_id, sae in saes.items():
        att = attribute(model, {sae_id: sae}, p, target).saes[0]

        with torch.enable_grad(), hooks(model, {sae.site: leaf}):
            y = model(torch.tensor([p])).logits[0, -1, target.token]
            (g_BTD,) = torch.autograd.grad(y, seen["h"])
        assert att.total == pytest.approx(float((seen["h"] * g_BTD).sum()), rel=1e-9, abs=1e-9)
        assert att.error != 0 and att.bias != 0


def test_contrast_is_the_difference_of_two_attributions(tiny64, tiny):
    lm, _ = tiny
    model, saes = tiny64
    p = ids(lm, PROMPT)
    a, b = ids(lm, " was")[0], ids(lm, " is")[0]
    both = attribute(model, saes, p, AttributionTarget(a, b))
    only_a, only_b = attribute(model, saes, p, AttributionTarget(a)), attribute(model, saes, p, AttributionTarget(b))
    for d, x, y in zip(both.saes, only_a.saes, only_b.saes, strict=True):
        torch.testing.assert_close(torch.from_numpy(d.attr), torch.from_numpy(x.attr - y.attr))
        assert d.error == pytest.approx(x.error - y.error)


def test_ablating_the_top_feature_lowers_the_target_more_than_a_random_one(tiny, texts):
    lm, saes = tiny
    rng = random.Random(0)
    top_drops, random_drops = [], []
    for text in texts:
        t = ids(lm, text)[:48]
        if len(t) < 16:
            continue
        for pos in (8, 15, len(t) - 1):
            target = AttributionTarget(t[pos])
            att = attribute(lm.model, saes, t[:pos], target)
            s = max(att.saes, key=lambda s: s.attr.max())
            best = int(s.feature[s.attr.argmax()])  # one (position, feature) pair; the ablation takes it everywhere
            others = sorted({int(f) for f in s.feature} - {best})
            other = rng.choice(others)
            for feature, drops in ((best, top_drops), (other, random_drops)):
                ablated = target_value(lm.model, saes, t[:pos], target, Change(s.sae_id, feature, scale=0.0))
                drops.append(att.value - ablated)
    n = len(top_drops)
    assert n >= 60
    mean_top, mean_random = sum(top_drops) / n, sum(random_drops) / n
    assert mean_top > 0 and mean_top > 3 * abs(mean_random), (mean_top, mean_random)
    assert sum(a > b for a, b in zip(top_drops, random_drops, strict=True)) > 0.8 * n


def test_replayed_steering_gives_the_probabilities_the_generation_had(tiny):
    lm, saes = tiny
    sae = saes["layer1"]
    p = ids(lm, "Once upon a time")
    edits = {sae.site: [Edit(sae, 40, "add", 6.0), Edit(sae, 3, "ablate", 0.0, start=len(p) + 2)]}
    for where in ("both", "generated", "prompt"):
        out = generate(lm.model, [Row(p, edits, where=where, max_new_tokens=8)])[0]
        seq = p + out.ids
        for i in (0, 3, 7):
            att = attribute(
                lm.model, saes, seq[: len(p) + i], AttributionTarget(out.ids[i]), replay_hooks(edits, where, len(p))
            )
            assert att.prob == pytest.approx(out.probs[i], rel=1e-4), (where, i)


def test_steering_from_a_position(tiny):
    lm, saes = tiny
    sae = saes["layer1"]
    p = ids(lm, "The cat sat on the")

    def run(start, where="both"):
        edits = {sae.site: [Edit(sae, 40, "add", 12.0, start=start)]}
        return generate(lm.model, [Row(p, edits, where=where, max_new_tokens=10)])[0]

    plain = generate(lm.model, [Row(p, {}, max_new_tokens=10)])[0]
    assert run(len(p)).ids == run(0, "generated").ids and run(len(p)).probs == run(0, "generated").probs
    later = run(len(p) + 4)  # token j is predicted at position len(p) + j - 1: the first 5 cannot change
    assert later.ids[:5] == plain.ids[:5] and later.probs[:5] == plain.probs[:5]
    assert later.ids != plain.ids


def test_bad_inputs(tiny):
    lm, saes = tiny
    p = ids(lm, PROMPT)
    with pytest.raises(AttributionError, match="not in the vocabulary"):
        attribute(lm.model, saes, p, AttributionTarget(lm.vocab_size))
    with pytest.raises(AttributionError, match="no tokens"):
        attribute(lm.model, saes, [], AttributionTarget(1))
    with pytest.raises(AttributionError, match="no SAE"):
        target_value(lm.model, saes, p, AttributionTarget(1), Change("nope", 1))


def test_the_default_suppression_is_the_ablation_the_attribution_estimates(tiny):
    """The attribution is the first-order estimate of removing f * W_dec[f] (error term held). The `subtract`
    steering edit (the default "suppress and regenerate") makes exactly that change; `ablate` makes a larger
    one (divided by the encoder gain), so its effect on the target differs."""
    lm, saes = tiny
    t = ids(lm, PROMPT)
    target = AttributionTarget(t[-1])
    att = attribute(lm.model, saes, t[:-1], target)
    for s in att.saes:
        sae = saes[s.sae_id]
        feature = int(s.feature[s.attr.argmax()])
        plain = target_value(lm.model, saes, t[:-1], target, Change(s.sae_id, feature, scale=0.0))

        edited = {
            mode: target_value(
                lm.model,
                saes,
                t[:-1],
                target,
                steer=replay_hooks({sae.site: [Edit(sae, feature, mode, 0.0)]}, "both", len(t) - 1),
            )
            for mode in ("subtract", "ablate")
        }
        assert edited["subtract"] == pytest.approx(plain, abs=1e-4), s.sae_id
        assert abs(edited["ablate"] - plain) > 1e-3, s.sae_id
