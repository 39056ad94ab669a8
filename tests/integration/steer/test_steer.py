"""Steering math and the batched engine, on the tiny default (mini-Qwen and its SAEs)."""

import pytest
import torch

from qscope.model import capture, hooks
from qscope.steer.edits import Edit, resolve_edits, steer_hidden, unit_direction
from qscope.steer.engine import Row, generate
from qscope.steer.spec import FeatureSteer, SpecError


def ids(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def firing_feature(lm, sae, prompt):
    h_TD = capture(lm.model, [sae.site], torch.tensor([prompt]))[sae.site][0]
    f_TF = sae.encode(h_TD)
    return int(f_TF[-1].argmax()), f_TF


@torch.no_grad()
def hidden_after(lm, sae, prompt, edits):
    """The layer's output as the next layer sees it (a hook registered after the steering one)."""
    seen = {}
    mask = lambda h: torch.ones(h.shape[:2], dtype=torch.bool)  # noqa: E731
    with hooks(lm.model, {sae.site: lambda h: steer_hidden(h, [edits], mask(h))}):
        with hooks(lm.model, {sae.site: lambda h: seen.setdefault("h", h)}):
            logits = lm.model(torch.tensor([prompt])).logits[0, -1]
    return seen["h"][0], logits


def test_add_is_strength_times_unit_direction(tiny):
    _, sae = tiny
    h_BTD = torch.randn(2, 3, sae.d_in)
    edits = [[Edit(sae, 7, "add", 2.5)], []]
    out = steer_hidden(h_BTD, edits, torch.tensor([[True, False, True], [True, True, True]]))
    torch.testing.assert_close(out[0, 0], h_BTD[0, 0] + 2.5 * unit_direction(sae, 7))
    assert torch.equal(out[0, 1], h_BTD[0, 1]) and torch.equal(out[1], h_BTD[1])


def test_resolve_edits_units_and_errors(tiny):
    _, sae = tiny
    saes = {"s": sae}
    edits = resolve_edits([FeatureSteer(sae_id="s", feature=3, mode="add", strength=2.0)], saes, lambda s, f: 1.5)
    assert edits[sae.site][0].value == 3.0
    with pytest.raises(SpecError, match="no SAE"):
        resolve_edits([FeatureSteer(sae_id="x", feature=3)], saes, lambda s, f: 1.0)
    with pytest.raises(SpecError, match="out of range"):
        resolve_edits([FeatureSteer(sae_id="s", feature=sae.d_sae)], saes, lambda s, f: 1.0)


def test_strength_zero_gives_the_default_text(tiny):
    lm, sae = tiny
    p = ids(lm, "The cat sat on the")
    kw = dict(temperature=0.9, top_p=0.9, seed=11, max_new_tokens=12, frequency_penalty=0.3)
    rows = [Row(p, {}, **kw), Row(p, {sae.site: [Edit(sae, 5, "add", 0.0)]}, **kw), Row(p, {}, **kw)]
    outs = generate(lm.model, rows)
    assert outs[0].ids == outs[1].ids == outs[2].ids
    assert len(outs[0].ids) == 12 and all(0 < p <= 1 for p in outs[0].probs)


def test_strong_add_raises_activation_and_top_logit_tokens(tiny):
    lm, sae = tiny
    p = ids(lm, "def main():\n    return")
    feature = 40
    _, f_TF = firing_feature(lm, sae, p)
    h_TD, logits_V = hidden_after(lm, sae, p, [Edit(sae, feature, "add", 20.0)])
    _, base_logits_V = hidden_after(lm, sae, p, [])
    steered_act = sae.encode(h_TD)[:, feature]
    assert steered_act.mean() > f_TF[:, feature].mean() + 5.0
    # top logit-effect tokens of the feature: W_dec[f] @ W_U (no final norm, as the harvest computes them)
    effect_V = lm.model.get_output_embeddings().weight @ sae.decoder_directions[feature]
    top = effect_V.topk(10).indices
    rise = (logits_V - base_logits_V)[top].mean() - (logits_V - base_logits_V).mean()
    assert rise > 1.0


def test_ablate_makes_the_activation_zero_at_the_layer(tiny):
    lm, sae = tiny
    p = ids(lm, "The cat sat on the")
    feature, f_TF = firing_feature(lm, sae, p)
    assert f_TF[-1, feature] > 0.5
    h_TD, _ = hidden_after(lm, sae, p, [Edit(sae, feature, "ablate", 0.0)])
    torch.testing.assert_close(sae.encode(h_TD)[:, feature], torch.zeros(len(p)), atol=1e-4, rtol=0)


def test_clamp_sets_the_activation(tiny):
    lm, sae = tiny
    p = ids(lm, "The cat sat on the")
    feature, _ = firing_feature(lm, sae, p)
    h_TD, _ = hidden_after(lm, sae, p, [Edit(sae, feature, "clamp", 7.0)])
    assert abs(float(sae.encode(h_TD)[-1, feature]) - 7.0) < 1e-3


def test_greedy_batched_equals_one_at_a_time(tiny):
    lm, sae = tiny
    prompts = [ids(lm, t) for t in ("The cat sat on the", "def f(x):", "Once upon a time, in a land far away")]
    steer = {sae.site: [Edit(sae, 40, "add", 6.0), Edit(sae, 3, "ablate", 0.0)]}
    rows = [
        Row(p, e, where=w, max_new_tokens=10)
        for p in prompts
        for e, w in (({}, "both"), (steer, "both"), (steer, "generated"))
    ]
    batched = generate(lm.model, rows)
    for row, out in zip(rows, batched, strict=True):
        assert generate(lm.model, [row])[0].ids == out.ids
    assert batched[0].ids != batched[1].ids  # the steering does something


def hand_sae():
    """A 2-d, 2-feature relu SAE with hand-set weights: feature 0 reads x0 with encoder gain 0.5."""
    from qscope.sae import Sae
    from qscope.sae.formats.common import SaeSpec

    W_enc = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return Sae(SaeSpec(W_enc, torch.zeros(2), W_dec, torch.zeros(2), "relu", site="model.layers.0"))


def test_suppression_by_default_takes_away_exactly_activation_times_decoder_row():
    """What an attribution estimates is the effect of a_f * W_dec[f]; the default suppression removes that and no
    more (`subtract`); `ablate`, by name, divides it by the encoder gain (here 0.5: twice as much)."""
    from qscope.steer.replay import suppress_spec
    from qscope.steer.spec import SteerSpec

    sae = hand_sae()
    h_BTD = torch.tensor([[[4.0, 1.0], [-2.0, 3.0]]])  # feature 0: a = 2 at position 0, 0 at position 1
    a_T = sae.encode(h_BTD[0])[:, 0]
    assert a_T.tolist() == [2.0, 0.0]
    mask = torch.ones(1, 2, dtype=torch.bool)

    def suppressed(**kw):
        spec = suppress_spec(SteerSpec(prompt="x"), [("s", 0)], 0, False, **kw)
        edits = resolve_edits(spec.features, {"s": sae}, lambda s, f: 1.0)
        return steer_hidden(h_BTD, [edits["model.layers.0"]], mask)

    removed = h_BTD - suppressed()
    torch.testing.assert_close(removed[0], a_T[:, None] * sae.W_dec[0], rtol=0, atol=0)
    torch.testing.assert_close((h_BTD - suppressed(mode="ablate"))[0], 2 * a_T[:, None] * sae.W_dec[0])
    assert sae.encode(suppressed(mode="ablate")[0])[0, 0] == 0  # ablate: 0 once encoded again
    assert sae.encode(suppressed()[0])[0, 0] == 1.0  # subtract: (1 - gain) * a, as a real SAE leaves it
