"""`qscope steer-eval`: the evaluation engine run in this process, without a server, with its progress
(qscope.progress: bars in a terminal, lines in a log).

The request file is a whole evaluation request (as POST /api/steer-eval takes) or a bare steering spec (as
POST /api/steer takes); command-line options fill in or replace its prompt set, sweep and controls.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from qscope.inputs import files
from qscope.progress import PhaseProgress
from qscope.steer.evaluate.diffmean import SetsOf
from qscope.steer.evaluate.plan import Plan, prepare
from qscope.steer.evaluate.prompt_sets import builtin
from qscope.steer.evaluate.request import EvalLimits, EvalRequest
from qscope.steer.evaluate.result import EvalResult, Identity
from qscope.steer.evaluate.run import execute, inline
from qscope.steer.evaluate.target import Target, from_live
from qscope.steer.spec import SpecError, SteerLimits, SteerSpec


def load_request(path: Path, overrides: dict) -> EvalRequest:
    """The request in `path` (a request or a bare spec) with the non-None overrides applied; SpecError when the
    file is not one. `prompts_path` in overrides names a prompt file, sent as the server would get it."""
    try:
        raw = files.json_value(files.text_of(path.name, path.read_bytes()), path.name)
    except (OSError, files.UploadError) as e:
        raise SpecError(f"cannot read {path}: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path} holds no JSON object: give a steering spec or an evaluation request")
    if "spec" not in raw:
        raw = {"spec": raw}
    prompts_path = overrides.pop("prompts_path", None)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if prompts_path is not None or changes.get("prompt_set"):
        for key in ("prompts", "prompts_text", "prompts_file", "prompt_set"):
            raw.pop(key, None)
    if prompts_path is not None:
        try:
            data = Path(prompts_path).read_bytes()
        except OSError as e:
            raise SpecError(f"cannot read the prompt file: {e}") from None
        raw["prompts_file"] = {"name": Path(prompts_path).name, "content_base64": base64.b64encode(data).decode()}
    raw.update(changes)
    try:
        raw["spec"] = SteerSpec.model_validate(raw["spec"]).model_dump()
        return EvalRequest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise SpecError(f"{path}: {where}: {first['msg']}") from None


MB = 1 << 20


def _identify(target: Target, progress: PhaseProgress) -> Identity:
    name = "identity (sha256)"
    progress.add(name, target.bytes_to_hash() / MB, "MB")
    with progress.run(name) as advance:
        return target.identify(lambda n: advance(n / MB))


def plan_local(
    req: EvalRequest, live, limits: EvalLimits, steer_limits: SteerLimits, sets_of: SetsOf | None = None
) -> tuple[Plan, Target]:
    target = from_live(live)
    req = req.model_copy(update={"spec": req.spec.model_copy(update={"model_id": target.model_id})})
    return prepare(req, target, limits, steer_limits, builtin(), sets_of), target


def run_local(plan: Plan, target: Target, console: Console, batch_rows: int) -> EvalResult:
    """Run the plan here: hash the files, then generate and measure, showing the progress of each."""
    with PhaseProgress(console) as progress:
        return run_shown(plan, target, progress, batch_rows)


def run_shown(plan: Plan, target: Target, progress: PhaseProgress, batch_rows: int) -> EvalResult:
    """run_local's work, its phases shown by a progress display that is already open (`qscope fix`'s)."""
    ident = _identify(target, progress)
    progress.add(name := "evaluate", len(plan.rows), "rows")

    def report(phase: str, done: float, total: int) -> None:  # phase: generating or measuring
        progress.update(name, done=done, total=total, info=phase)

    with progress.run(name):
        return execute(plan, target, inline, ident, batch_rows=batch_rows, progress=report)


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file renamed into place (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
