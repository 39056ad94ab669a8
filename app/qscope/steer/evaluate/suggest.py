"""A built-in prompt set's steer on a given model: the feature that separates the set's probe texts (which
express the concept) from its prompts (which do not), found by running the model, so the choice holds for any
build of mini-Qwen (full or tiny) rather than naming a feature index that only one build has.

Rank: the difference in firing rate (fraction of tokens where the feature is > 0, position 0 left out) between
the probe texts and the prompts, on one SAE (by default the shallowest past layer 0: on mini-Qwen its features
steer more cleanly than deeper ones), among features that fired in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from qscope.model import capture
from qscope.steer.evaluate.prompt_sets import PromptSet
from qscope.steer.evaluate.target import Target
from qscope.steer.spec import FeatureSteer


@torch.no_grad()
def firing_rate(target: Target, sae_id: str, texts: Sequence[str]) -> torch.Tensor:
    """Per feature [F]: the fraction of the texts' tokens (after the first of each) where it fires."""
    sae, tok = target.saes[sae_id], target.lm.require_tokenizer()
    site = sae.require_site()
    fired_F, n = torch.zeros(sae.d_sae), 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            continue
        with target.lock or nullcontext():  # the model's hooks are shared with every other run of it
            h_TD = capture(target.lm.model, [site], torch.tensor([ids]))[site][0, 1:]
        fired_F += (sae.encode(h_TD) > 0).float().sum(0).cpu()
        n += len(ids) - 1
    return fired_F / max(n, 1)


def default_sae(target: Target) -> str:
    """The shallowest SAE past layer 0 (whose features mostly name the token itself), else the shallowest."""
    by_layer = sorted(target.saes, key=lambda s: target.saes[s].layer or 0)
    return next((s for s in by_layer if (target.saes[s].layer or 0) > 0), by_layer[0])


def suggest(target: Target, prompt_set: PromptSet, sae_id: str | None = None) -> FeatureSteer:
    """The set's steer on this target: mode and strength sign from the set, the feature found as above.

    Whatever the goal, the feature is the one that fires on the concept (the probes) more than on the prompts: a
    "decrease" set suppresses it with a negative strength rather than picking a feature that fires less."""
    sae_id = sae_id or default_sae(target)
    gap_F = firing_rate(target, sae_id, prompt_set.probe) - firing_rate(target, sae_id, prompt_set.prompts)
    alive_F = torch.as_tensor(target.max_acts(sae_id) > 0)
    gap_F[~alive_F] = -float("inf")  # after any sign: a dead feature is never the best
    strength = -1.0 if prompt_set.mode == "decrease" and prompt_set.steer_mode == "add" else 1.0
    return FeatureSteer(sae_id=sae_id, feature=int(gap_F.argmax()), mode=prompt_set.steer_mode, strength=strength)
