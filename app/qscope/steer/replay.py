"""A steering run seen again: hooks that replay its steered row over the whole sequence in one forward pass (so
an attribution sees the model as it ran), and the spec that suppresses features in it ("Suppress and
regenerate": the same prompt and settings, the chosen features turned off from one position on, or everywhere, by
the `subtract` rule, which takes away exactly what an attribution estimates, or by `ablate`).

In generation the prompt pass steers the prompt's positions (where != "generated") and each later step steers
the token it feeds (where != "prompt"); over the whole sequence that is a mask on positions: < the prompt's
length for the prompt, >= it for the generated tokens. An edit's `start` (FeatureSteer.from_position) holds too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from qscope.steer.edits import Edit, PositionedSteer
from qscope.steer.spec import FeatureSteer, Mode, SteerSpec, Where


def position_mask(where: Where, prompt_len: int, n_tokens: int) -> Tensor:
    """bool [T]: the positions of a prompt + generation sequence that `where` steers."""
    pos_T = torch.arange(n_tokens)
    if where == "prompt":
        return pos_T < prompt_len
    if where == "generated":
        return pos_T >= prompt_len
    return torch.ones(n_tokens, dtype=torch.bool)


def replay_hooks(edits: dict[str, list[Edit]], where: Where, prompt_len: int) -> dict[str, Callable[[Tensor], Tensor]]:
    """{site: fn(h [1, T, D]) -> h} applying one row's edits as the engine did while generating it."""
    steers = {site: PositionedSteer([site_edits]) for site, site_edits in edits.items()}

    def fn(steer: PositionedSteer) -> Callable[[Tensor], Tensor]:
        def apply(h_BTD: Tensor) -> Tensor:
            T = h_BTD.shape[1]
            mask_BT = position_mask(where, prompt_len, T).to(h_BTD.device)[None]
            return steer(h_BTD, mask_BT, torch.arange(T, device=h_BTD.device)[None])

        return apply

    return {site: fn(steer) for site, steer in steers.items()}


def suppress_spec(
    spec: SteerSpec,
    features: Sequence[tuple[str, int]],
    from_position: int,
    keep_steering: bool,
    mode: Mode = "subtract",
) -> SteerSpec:
    """`spec` with `features` turned off by `mode` (an OFF_MODES rule) from token position `from_position` on
    (0: everywhere). keep_steering: the run's own features stay (a steered row); else they go and the
    suppressions apply wherever they reach."""
    kept = list(spec.features) if keep_steering else []
    ablate = [
        FeatureSteer(sae_id=sae_id, feature=feature, mode=mode, strength=0.0, from_position=from_position)
        for sae_id, feature in features
    ]
    return spec.model_copy(update={"features": kept + ablate, "where": spec.where if keep_steering else "both"})
