"""`qscope fix`: the fix flow (qscope.fix.flow) in this process, without a server: the discovery, the candidates,
one batched steering evaluation, the ranked interventions. Progress goes to stderr, the ranking to stdout with a
JSON line last; `--out` writes the whole result as JSON, `--save` keeps the discovery, the evaluation's recipe
and the fix in the app database (Settings.app_db_url), where `qscope serve` shows them at their permalinks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qscope.config import get_settings
from qscope.discover.cli_common import cli_runner, console, examples_in, fail, fmt, limits, load_live, say, write_json


def _strengths(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise fail(f"--strengths {text!r}: give numbers, e.g. 0,0.5,1,2") from None


def fix_cmd(
    pos: Annotated[list[Path] | None, typer.Option("--pos", help="File of set A's examples (the behaviour).")] = None,
    neg: Annotated[list[Path] | None, typer.Option("--neg", help="File of set B's examples (without it).")] = None,
    data: Annotated[Path | None, typer.Option(help="One labelled .csv/.jsonl holding both sets.")] = None,
    label_column: Annotated[str, typer.Option(help="The label column of --data.")] = "label",
    text_column: Annotated[str, typer.Option(help="The text column (.csv) or field (.jsonl).")] = "text",
    demo: Annotated[str | None, typer.Option(help="A demo set of the corpus instead (e.g. code-vs-prose).")] = None,
    demo_n: Annotated[int, typer.Option(help="Examples per side of a demo set.")] = 100,
    goal: Annotated[str, typer.Option(help="increase or decrease the behaviour (set A).")] = "increase",
    per_sae: Annotated[int, typer.Option(help="Candidate features per SAE (1-4).")] = 2,
    prompts: Annotated[
        Path | None, typer.Option(help="Prompts to steer, one a line (default: the held-out test split).")
    ] = None,
    max_prompts: Annotated[int, typer.Option(help="Most prompts used.")] = 8,
    strengths: Annotated[str, typer.Option(help="The sweep, comma-separated.")] = "0,0.5,1,2",
    seeds: Annotated[int, typer.Option(help="Sampling seeds per prompt.")] = 2,
    random_controls: Annotated[int, typer.Option(help="Random-feature control sets.")] = 2,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per row.")] = 24,
    db: Annotated[Path | None, typer.Option(help="Feature store whose model, SAEs and labels to use.")] = None,
    test_share: Annotated[float, typer.Option(help="Share of each set held out.")] = 0.3,
    seed: Annotated[int | None, typer.Option(help="Seed (default: Settings.seed).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the whole result as JSON here.")] = None,
    save: Annotated[
        bool, typer.Option("--save", help="Keep the discovery, recipe and fix in the app database.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="torch device (default: Settings.device).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: Settings.dtype).")] = None,
) -> None:
    """Fix a behaviour: discover it, evaluate its top features and DiffMean as steers on held-out prompts in one
    batched evaluation beside controls, and rank them."""
    from pydantic import ValidationError

    from qscope.discover.discovery import DiscoverOptions
    from qscope.discover.examples import ExamplesError
    from qscope.discover.requests import example_set
    from qscope.fix.request import FixSettings, check
    from qscope.steer.evaluate.jobs import eval_limits
    from qscope.steer.service import steer_limits as limits_of_steering

    settings = get_settings()
    if not (pos or neg or data or demo):
        raise fail("give the examples: --pos FILE --neg FILE, --data FILE (with a label column) or --demo NAME")
    try:
        fix = FixSettings(
            goal=goal,  # checked by the model: increase or decrease
            per_sae=per_sae,
            prompts=prompts.read_text(encoding="utf-8").splitlines() if prompts else None,
            max_prompts=max_prompts,
            strengths=_strengths(strengths),
            seeds=seeds,
            random_controls=random_controls,
            max_new_tokens=max_new_tokens,
        )
    except (ValidationError, OSError) as e:
        raise fail(str(e).splitlines()[0] if isinstance(e, OSError) else _first(e)) from e
    served, live = load_live(db, device, dtype)
    seed = settings.runtime.seed if seed is None else seed
    steer_limits, ev_limits = limits_of_steering(settings.steer), eval_limits(settings.steer_eval)
    try:
        req = examples_in(pos, neg, data, demo, demo_n, label_column, text_column)
        examples = example_set(req, limits(None), served.corpus_dir, seed)
        options = DiscoverOptions(test_share=test_share, seed=seed)
        check(fix, ev_limits, len(served.saes), steer_limits)
    except (ExamplesError, ValueError) as e:
        raise fail(str(e).splitlines()[0]) from e
    result = _run(served, live, examples, options, fix, settings, steer_limits, ev_limits, save)
    _print(result)
    summary = _summary(result)
    if out is not None:
        write_json(out, result.model_dump_json(indent=1))
        summary["out"] = str(out)
    typer.echo(json.dumps(summary))


def _first(e) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"


def _run(served, live, examples, options, fix, settings, steer_limits, ev_limits, save: bool):
    from qscope.discover.examples import ExamplesError
    from qscope.discover.store import DiscoverStore, new_id
    from qscope.fix.flow import FixInputs, run_fix
    from qscope.jobs import Cancelled
    from qscope.progress import PhaseProgress
    from qscope.steer.evaluate.local import run_shown
    from qscope.steer.evaluate.recipes import RecipeStore
    from qscope.steer.evaluate.result import title_of
    from qscope.steer.evaluate.target import from_live
    from qscope.steer.spec import SpecError

    store = DiscoverStore(settings.app_db.url) if save else None
    recipes = RecipeStore(settings.app_db.url) if save else None

    def keep(d) -> str:
        if store is None:
            return ""
        top = d.ranking.a_side[0].test_auroc if d.ranking.a_side else None
        return store.save("discovery", new_id(), d.model_id, f"{d.names[0]} vs {d.names[1]}", d.model_dump_json(), top)

    inputs = FixInputs(
        examples,
        cli_runner(served, settings),
        served.tokenizer,
        options,
        settings.discover.max_tokens,
        served.label_of,
        from_live(live),
        ev_limits,
        steer_limits,
    )
    try:
        with PhaseProgress(console) as shown:

            def run_plan(plan):
                result = run_shown(plan, inputs.target, shown, settings.steer_eval.batch_rows)
                if recipes is None:
                    return result, ""
                recipe = new_id()
                recipes.add_job(recipe, result.identity.model_id, plan.request.model_dump_json())
                recipes.finish(recipe, result, title_of(plan.request, len(plan.prompts)), {"phase": "done"})
                return result, recipe

            result = run_fix(inputs, fix, run_plan, keep, shown.reporter())
    except (KeyboardInterrupt, Cancelled) as e:
        raise fail("interrupted: nothing more was written or saved", 130) from e
    except (ExamplesError, SpecError) as e:
        raise fail(str(e)) from e
    if store is not None:
        result.id = new_id()
        figure = result.best.score.mean if result.best else None
        name = f"{'raise' if result.goal == 'increase' else 'lower'} {result.names[0]} (vs {result.names[1]})"
        store.save("fix", result.id, result.model_id, name, result.model_dump_json(), figure)
        say(f"saved: /fix/{result.id}, the recipe /recipes/{result.recipe}, the discovery /discover/{result.discovery}")
        store.close()
    return result


def _print(r) -> None:
    from rich.table import Table

    table = Table(title=f"{'raise' if r.goal == 'increase' else 'lower'} {r.names[0]} (vs {r.names[1]}): ranked")
    for col in ("rank", "intervention", "strength", "concept", "lo", "hi", "ppl ratio", "standing", "verdict"):
        table.add_column(col)
    for x in r.interventions:
        table.add_row(
            "-" if x.rank is None else str(x.rank),
            x.name,
            "-" if x.strength is None else f"{x.strength:g}",
            fmt(x.score.mean),
            fmt(x.score.lo),
            fmt(x.score.hi),
            fmt(x.ppl_ratio),
            x.standing,
            x.verdict,
        )
    console.print(table)
    say(
        f"concept: {r.concept.sae_id} #{r.concept.feature} (test AUROC {fmt(r.concept.test_auroc)}); {r.prompts_source}"
    )
    say(r.sentence)
    say(f"arms compared: {r.comparison}")
    say("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r.seconds.items()))


def _summary(r) -> dict:
    return {
        "model_id": r.model_id,
        "goal": r.goal,
        "best": r.best.name if r.best else None,
        "best_arm": r.best.arm if r.best else None,
        "best_verdict": r.best.verdict if r.best else None,
        "best_score": r.best.score.mean if r.best else None,
        "ranked": [x.arm for x in r.interventions],
        "rows": r.rows,
        "fix": r.id or None,
        "fix_url": f"/fix/{r.id}" if r.id else None,
        "recipe_url": f"/recipes/{r.recipe}" if r.recipe else None,
        "seconds": r.seconds,
    }
