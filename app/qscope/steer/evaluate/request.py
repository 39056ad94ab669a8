"""What a steering evaluation asks for (pydantic, so it doubles as the API schema), its limits, and the prompt
set: pasted lines, a list, an uploaded .txt / .jsonl / .csv / .json file (read by qscope.inputs.files), or a
built-in set.

Strength sweep: each sweep value s replaces the strength of every feature of the spec (keeping the sign the spec
gives it), so s is in the spec's own units (add and clamp: a multiple of the feature's max activation). An
`ablate` feature is left alone at s = 0 and ablated at any other s, so a spec of ablations only sweeps [0, 1].
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from qscope.inputs import files, patterns
from qscope.inputs.numbers import Finite
from qscope.steer.spec import FeatureSteer, SpecError, SteerSpec

DEFAULT_STRENGTHS = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
Goal = Literal["auto", "increase", "decrease"]
Script = Literal["latin", "cjk", "kana", "hangul", "cyrillic", "greek", "arabic", "hebrew", "devanagari", "thai"]


class ConceptFeature(BaseModel):
    sae_id: str = Field(description="SAE of the feature whose firing is the concept score.")
    feature: int = Field(ge=0, description="Feature index in that SAE.")


class TextMetrics(BaseModel):
    """Measures of the generated text that a user asks for (each a rate or share per output)."""

    required: list[str] = Field(default_factory=list, description="Terms every output should hold (any case).")
    forbidden: list[str] = Field(default_factory=list, description="Terms no output should hold (any case).")
    regex: str | None = Field(
        None,
        max_length=patterns.MAX_CHARS,
        description="A Python regular expression searched in each output, under a time limit: once it runs too "
        "long, the evaluation stops measuring it and says so in its notes.",
    )
    scripts: list[Script] = Field(
        default_factory=list, description="Share of the output's letters in each script (code-switching)."
    )
    distinct_n: int = Field(2, ge=1, le=4, description="n of the distinct-n repetition measure.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value:
            patterns.UserPattern(value)  # PatternError (a ValueError) says why not
        return value or None


class DiffMeanSource(BaseModel):
    """Where the DiffMean arm's direction comes from: a saved discovery (its train examples: set A with the
    concept, set B without), or two prompt lists. The direction is mean(residual | with) - mean(residual | without)
    at the site of the first steered feature (qscope.steer.evaluate.diffmean)."""

    discovery: str | None = Field(
        None, max_length=64, description="Id of a saved discovery: its train split gives the two sets (A with)."
    )
    with_concept: list[str] | None = Field(None, description="Texts that express the concept.")
    without_concept: list[str] | None = Field(None, description="Texts that do not.")


class PromptFile(BaseModel):
    name: str = Field(description="File name; its extension picks the format: .txt, .jsonl, .csv or .json.")
    content_base64: str = Field(description="The file's bytes, base64-encoded.")


class EvalRequest(BaseModel):
    """One evaluation: a steering spec, a prompt set (exactly one of prompts, prompts_text, prompts_file,
    prompt_set), the sweep and controls, and the measures to take."""

    spec: SteerSpec = Field(description="As for /api/steer; its prompt is ignored (the prompt set replaces it).")
    prompts: list[str] | None = Field(None, description="The prompts as a list.")
    prompts_text: str | None = Field(None, description="The prompts pasted, one per line.")
    prompts_file: PromptFile | None = Field(None, description="The prompts as an uploaded file.")
    prompt_set: str | None = Field(None, description="The name of a built-in prompt set.")
    strengths: list[Finite] = Field(default_factory=lambda: list(DEFAULT_STRENGTHS), description="The sweep.")
    seeds: int = Field(2, ge=1, description="Sampling seeds per prompt (spec.seed, +1, ...); 1 when greedy.")
    random_controls: int = Field(3, ge=0, description="Random features of the same SAE, max activation close.")
    instruction: str = Field("", description="Prefix for the prompt-only and prompt + steering arms (verbatim).")
    chat: bool = Field(False, description="Send each prompt as a user message through the chat template.")
    goal: Goal = Field("auto", description="increase or decrease the concept; auto: decrease for ablate or < 0.")
    concept: ConceptFeature | None = Field(None, description="The feature read back; default: the first steered.")
    measure: Literal["auto", "reads", "writes"] = Field(
        "auto",
        description="What the verdict goes by: reads (the concept fires on the output), writes (the share of its "
        "top promoted tokens in the output); auto: the sharper side of the feature (docs/steer-eval.md).",
    )
    max_ppl_ratio: Finite = Field(2.0, gt=1, le=100, description="Fluency threshold: perplexity / unsteered's.")
    metrics: TextMetrics = Field(default_factory=TextMetrics)
    diffmean: DiffMeanSource | None = Field(
        None,
        description="Also run a DiffMean steering vector as its own arm, swept over the same strengths in units "
        "of the site's mean residual norm (docs/steer-eval.md).",
    )
    candidates: list[FeatureSteer] = Field(
        default_factory=list,
        description="Other SAE features to run beside the spec's, each alone as its own arm (candidate-1, ...) over "
        "the same sweep and scored the same way (what `qscope fix` compares; docs/fix.md).",
    )


@dataclass(frozen=True)
class EvalLimits:
    """Bounds on one evaluation (from Settings); a request past one gets a 422 naming it."""

    max_prompts: int = 64
    max_prompt_chars: int = 2000
    max_seeds: int = 8
    max_strengths: int = 12
    max_random_controls: int = 8
    max_rows: int = 4096
    max_candidates: int = 16

    def check(self, req: EvalRequest, n_prompts: int) -> None:
        """SpecError for the first limit the request passes, rows aside (see check_rows)."""
        if n_prompts < 2:
            raise SpecError(f"the prompt set has {n_prompts} prompt(s); an evaluation needs at least 2")
        if n_prompts > self.max_prompts:
            raise SpecError(f"the prompt set has {n_prompts} prompts; at most {self.max_prompts} (max_prompts)")
        if req.seeds > self.max_seeds:
            raise SpecError(f"{req.seeds} seeds asked; at most {self.max_seeds} per prompt (max_seeds)")
        if not req.strengths:
            raise SpecError("the strength sweep is empty: give at least one strength")
        if len(req.strengths) > self.max_strengths:
            raise SpecError(f"{len(req.strengths)} strengths asked; at most {self.max_strengths} (max_strengths)")
        if req.random_controls > self.max_random_controls:
            raise SpecError(
                f"{req.random_controls} random controls asked; at most {self.max_random_controls} (max_random_controls)"
            )
        if not req.spec.features:
            raise SpecError("the spec steers no feature: give at least one in spec.features")
        if len(req.candidates) > self.max_candidates:
            raise SpecError(f"{len(req.candidates)} candidates asked; at most {self.max_candidates} (max_candidates)")
        if req.diffmean is not None:
            self.check_diffmean(req.diffmean)

    def check_diffmean(self, source: DiffMeanSource) -> None:
        """SpecError unless the source is exactly one of a discovery or both prompt lists, each list of 2 to
        max_prompts non-blank texts of at most max_prompt_chars."""
        lists = (source.with_concept, source.without_concept)
        if source.discovery is not None:
            if any(x is not None for x in lists):
                raise SpecError("diffmean: give a discovery id or two prompt lists, not both")
            return
        if all(x is None for x in lists):
            raise SpecError("diffmean: give either a discovery id or both with_concept and without_concept")
        for name, texts in zip(("with_concept", "without_concept"), lists, strict=True):
            if texts is None:
                raise SpecError(f"diffmean: {name} is missing; give both with_concept and without_concept")
            kept = [t for t in texts if t and t.strip()]
            if not 2 <= len(kept) <= self.max_prompts:
                raise SpecError(
                    f"diffmean: {name} has {len(kept)} non-blank texts; give 2 to {self.max_prompts} (max_prompts)"
                )
            for i, t in enumerate(texts):
                if len(t) > self.max_prompt_chars:
                    raise SpecError(
                        f"diffmean: {name} text {i + 1} has {len(t):,} characters; at most "
                        f"{self.max_prompt_chars:,} (max_prompt_chars)"
                    )

    def check_rows(self, n_prompts: int, n_seeds: int, n_points: int) -> None:
        """SpecError when prompts x seeds x arm-strength points passes max_rows."""
        n_rows = n_prompts * n_seeds * n_points
        if n_rows > self.max_rows:
            raise SpecError(
                f"the evaluation needs {n_rows:,} rows ({n_prompts} prompts x {n_seeds} seeds x {n_points} "
                f"arm-strength points); at most {self.max_rows:,} rows (max_rows)"
            )


def read_prompts(req: EvalRequest, builtin: dict[str, list[str]], max_chars: int) -> list[str]:
    """The request's prompts from its one source, without blank ones; SpecError when none or
    several sources are given, a file is not text, or a prompt is too long."""
    given = [n for n in ("prompts", "prompts_text", "prompts_file", "prompt_set") if getattr(req, n) is not None]
    if len(given) != 1:
        names = ", ".join(given) if given else "none"
        raise SpecError(f"give exactly one of prompts, prompts_text, prompts_file, prompt_set (got {names})")
    if req.prompts is not None:
        prompts = req.prompts
    elif req.prompts_text is not None:
        prompts = req.prompts_text.splitlines()
    elif req.prompts_file is not None:
        prompts = parse_prompt_file(req.prompts_file.name, _decode_b64(req.prompts_file))
    else:
        if req.prompt_set not in builtin:
            raise SpecError(f"no built-in prompt set {req.prompt_set!r}; there are: {', '.join(builtin) or 'none'}")
        prompts = builtin[req.prompt_set]
    prompts = [p for p in prompts if p and p.strip()]  # kept as written: trailing spaces and indents matter
    for i, p in enumerate(prompts):
        if len(p) > max_chars:
            raise SpecError(f"prompt {i + 1} has {len(p):,} characters; at most {max_chars:,} (max_prompt_chars)")
    return prompts


def _decode_b64(f: PromptFile) -> bytes:
    try:
        return base64.b64decode(f.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(f"prompts_file {f.name!r}: content_base64 is not base64") from None


def parse_prompt_file(name: str, data: bytes) -> list[str]:
    """Prompts from a file's bytes: .jsonl (a string or an object with "prompt" or "text" per line), .csv (the
    "prompt" or "text" column, else the first), .json (a list of such), anything else one prompt per line. The
    file is read by qscope.inputs.files; SpecError says why it cannot be."""
    try:
        return _prompts_of(name, files.text_of(name, data))
    except files.UploadError as e:
        raise SpecError(str(e)) from None


def _prompts_of(name: str, text: str) -> list[str]:
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix == "jsonl":
        return [_prompt_of(item, name, n) for n, item in files.json_lines(text, name)]
    if suffix == "json":
        items = files.json_value(text, name)
        if not isinstance(items, list):
            raise SpecError(f"the file {name!r} is not a JSON list of prompts")
        return [_prompt_of(x, name, i + 1) for i, x in enumerate(items)]
    if suffix == "csv":
        return _csv_prompts(files.csv_rows(text, name))
    return text.splitlines()


def _prompt_of(item, name: str, line: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("prompt", "text"):
            if isinstance(item.get(key), str):
                return item[key]
    raise SpecError(f'the file {name!r}, item {line}: expected a string or an object with a "prompt" field')


def _csv_prompts(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    col = next((header.index(k) for k in ("prompt", "text") if k in header), None)
    body = rows[1:] if col is not None else rows
    col = col or 0
    return [r[col] for r in body if len(r) > col]
