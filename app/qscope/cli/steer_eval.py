"""`qscope steer-eval`: a steering evaluation run in this process, without a server (the engine of
POST /api/steer-eval; progress bars on stderr, the result written atomically as the recipe's JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from qscope.cli.app import cli, console, say
from qscope.config import get_settings


def _default_store() -> Path | None:
    """The demo's feature store, where `qscope demo` puts it, if it is there."""
    from qscope.harvest.ids import model_id_for

    settings = get_settings()
    db = settings.paths.data_dir / f"{model_id_for(str(settings.paths.demo_dir / 'model'))}.duckdb"
    return db if db.is_file() else None


@cli.command("steer-eval")
def steer_eval_cmd(
    spec: Annotated[
        Path,
        typer.Argument(
            help="A steering spec (as for POST /api/steer) or a whole evaluation "
            "request (as for POST /api/steer-eval), JSON."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where the result goes (JSON, the recipe's form).")],
    prompts: Annotated[Path | None, typer.Option(help="Prompt file: .txt (one a line), .jsonl, .csv, .json.")] = None,
    prompt_set: Annotated[str | None, typer.Option("--set", help="A built-in prompt set instead.")] = None,
    db: Annotated[Path | None, typer.Option(help="Feature store of the model (default: the demo's).")] = None,
    strengths: Annotated[str | None, typer.Option(help="The sweep, comma-separated (default 0,0.25,...,8).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Sampling seeds per prompt.")] = None,
    random_controls: Annotated[int | None, typer.Option(help="Random-feature control sets.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Prefix of the prompt-only arms.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Also write the recipe as Markdown here.")] = None,
    batch_rows: Annotated[int | None, typer.Option(help="Rows per batched generation.")] = None,
    diffmean_discovery: Annotated[
        str | None,
        typer.Option(help="Add a DiffMean arm from this saved discovery's train split (the app database's)."),
    ] = None,
) -> None:
    """Evaluate a steer over a prompt set and a strength sweep against controls, without a server: the same
    engine as POST /api/steer-eval. Prints the verdict; the result is written to --out."""
    from qscope.live.runner import LiveUnavailable
    from qscope.steer.evaluate.local import load_request, write_atomic
    from qscope.steer.evaluate.markdown import to_markdown
    from qscope.steer.evaluate.result import title_of
    from qscope.steer.spec import SpecError
    from qscope.store.queries import StoreError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    db = db or _default_store()
    if db is None:
        say("error: no feature store: pass --db (or build and harvest the demo with `qscope demo`)", "red")
        raise typer.Exit(2)
    try:
        sweep = [float(s) for s in strengths.split(",") if s.strip()] if strengths else None
    except ValueError as err:
        say(f"error: --strengths must be numbers separated by commas: {err}", "red")
        raise typer.Exit(2) from err
    overrides: dict[str, object] = {"prompts_path": prompts, "prompt_set": prompt_set, "strengths": sweep}
    overrides |= {"seeds": seeds, "random_controls": random_controls, "instruction": instruction}
    overrides["diffmean"] = {"discovery": diffmean_discovery} if diffmean_discovery else None
    try:
        result = _steer_eval(load_request(spec, overrides), db, batch_rows)
    except (SpecError, StoreError, LiveUnavailable) as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    except KeyboardInterrupt as err:
        say("interrupted: nothing was written", "yellow")
        raise typer.Exit(130) from err
    write_atomic(out, result.model_dump_json(indent=1))
    if markdown:
        write_atomic(markdown, to_markdown(result, title_of(result.request, len(result.prompts))))
    v = result.verdict
    say(f"verdict: {v.status}" + (f" at strength {v.strength:g}" if v.strength is not None else "") + f": {v.reason}")
    if result.diffmean:
        dm = result.diffmean
        say(
            f"DiffMean arm: {dm.source}, {dm.n_with} with / {dm.n_without} without, at {dm.site}; strength 1 = "
            f"{dm.residual_norm:.3g} (mean residual norm on these prompts)"
        )
    if result.comparison:
        say(f"arms compared: {result.comparison.sentence}")
    say(f"{len(result.rows)} rows in {result.seconds:.1f} s ({result.rows_per_s:.1f} rows/s); wrote {out}")


def _steer_eval(req, db: Path, batch_rows: int | None):
    """Plan and run an evaluation on the model of the store `db`, in this process."""
    from qscope.discover.service import Discovering
    from qscope.live.runner import LiveModels
    from qscope.steer.evaluate.jobs import eval_limits
    from qscope.steer.evaluate.local import plan_local, run_local
    from qscope.steer.service import steer_limits
    from qscope.steer.spec import SpecError
    from qscope.store.queries import Store

    settings = get_settings()
    store = Store(db)
    models = LiveModels([store], device=settings.runtime.device, dtype=settings.runtime.dtype)
    live = models.get(req.spec.model_id or store.model_ids[0])
    if live is None:
        raise SpecError(f"{db} has no model {req.spec.model_id!r}; it has {', '.join(store.model_ids)}")
    # a DiffMean arm naming a discovery: the app database's
    sets_of = Discovering(settings.discover, settings.live.max_chars, settings.app_db.url).train_sets
    plan, target = plan_local(req, live, eval_limits(settings.steer_eval), steer_limits(settings.steer), sets_of)
    return run_local(plan, target, console, batch_rows or settings.steer_eval.batch_rows)
