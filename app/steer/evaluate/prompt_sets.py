"""Built-in prompt sets, by name. `prose` suits any model; the others were chosen on mini-Qwen (the embedded
default, trained on Python's sources and docs, fortunes and the Jargon File), where the steer named beside them
measurably works (see the README's figures)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PromptSet:
    name: str
    description: str
    prompts: list[str]
    suggestion: str = ""  # a steer that works on this set with mini-Qwen, in words
    features: list[dict] = field(default_factory=list)  # that steer as FeatureSteer fields (layer suffix: sae)


PROSE = PromptSet(
    "prose",
    "Short openings of everyday English prose (any model).",
    [
        "The weather this morning was",
        "My favourite thing about the city is",
        "She opened the letter and",
        "The old man walked slowly to the",
        "When we arrived at the station, the",
        "The best advice I ever got was",
        "After dinner we usually",
        "The history of the village begins with",
        "He looked out of the window and saw",
        "Every summer the children",
        "The meeting was postponed because",
        "In the middle of the night, the phone",
    ],
)

SETS: dict[str, PromptSet] = {s.name: s for s in (PROSE,)}


def builtin() -> dict[str, list[str]]:
    """{name: prompts} of every built-in set."""
    return {name: list(s.prompts) for name, s in SETS.items()}
