"""What a fix gives back and keeps (pydantic: the API's answer, the page's data, the app database's record)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qscope.fix.request import FixSettings
from qscope.steer.evaluate.result import Interval, Status


class Candidate(BaseModel):
    """A chosen SAE feature and what the discovery said of it."""

    arm: str = Field(description="Its arm in the evaluation: intervention (the top feature) or candidate-k.")
    sae_id: str
    feature: int
    label: str
    train_auroc: float
    test_auroc: float


Standing = Literal["best", "as good as the best", "worse than the best", "not fluent"]


class Intervention(BaseModel):
    """One intervention (an SAE feature or DiffMean) at its best point within the fluency bound."""

    rank: int | None = Field(description="1 = best; None: no point within the fluency bound, so not ranked.")
    arm: str
    name: str
    kind: Literal["feature", "diffmean"]
    sae_id: str | None = None
    feature: int | None = None
    label: str = ""
    strength: float | None
    score: Interval = Field(description="The concept read back (the share of generated tokens where it fires).")
    ppl_ratio: float | None
    fluent: bool
    standing: Standing
    verdict: Status = Field(description="Against the evaluation's controls (qscope.steer.evaluate.verdict).")
    reason: str


class FixResult(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")

    id: str = ""
    model_id: str
    names: tuple[str, str]
    goal: Literal["increase", "decrease"]
    settings: FixSettings
    discovery: str = Field(description="The discovery's id (/discover/{id}).")
    recipe: str = Field("", description="The evaluation's recipe id (/recipes/{id}), when it was saved.")
    concept: Candidate = Field(description="The feature read back on every output: the discovery's top feature.")
    candidates: list[Candidate]
    prompts_source: str
    n_prompts: int
    rows: int
    interventions: list[Intervention] = Field(description="Ranked as the evaluation's comparison ranks their arms.")
    best: Intervention | None = Field(description="The first ranked intervention; None when none is fluent.")
    best_arm_overall: str | None = Field(description="The comparison's best arm, controls and prompting included.")
    sentence: str = Field(description="The headline, computed from the ranking.")
    comparison: str = Field(description="The evaluation's sentence comparing the arms.")
    seconds: dict[str, float] = Field(description="Wall time per phase; `discover: ...` are the discovery's own.")
    notes: list[str] = Field(default_factory=list)
