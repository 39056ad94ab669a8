"""`qscope explain` (explain features in one line each with a language model, and score the explanations) and
`qscope explain-export` (explanations, scores and people's notes in bulk)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from qscope.cli.app import cli, console, say
from qscope.config import get_settings


@cli.command("explain")
def explain_cmd(
    db: Annotated[Path, typer.Option("--db", help="Feature store (.duckdb) whose features to explain.")],
    sae: Annotated[list[str] | None, typer.Option("--sae", help="SAE id; repeatable (default: every SAE).")] = None,
    features: Annotated[str | None, typer.Option(help="Feature indices in each chosen SAE, e.g. 1,2,5-9.")] = None,
    top: Annotated[int | None, typer.Option(help="The N densest live features of each chosen SAE.")] = None,
    list_id: Annotated[str | None, typer.Option("--list", help="The features of a list made on /lists.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL: http://HOST:PORT/v1.")] = None,
    explainer_model: Annotated[str | None, typer.Option(help="Model name at --endpoint (see its /v1/models).")] = None,
    scorer_model: Annotated[str | None, typer.Option(help="Model that scores (default: the explainer).")] = None,
    hf: Annotated[str | None, typer.Option(help="A Hugging Face model (hub id or folder) to run here.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=512, help="Features in flight at once.")] = 16,
    score: Annotated[bool, typer.Option("--score/--no-score", help="Detection and fuzzing scores.")] = True,
    redo: Annotated[bool, typer.Option("--redo", help="Explain again features that have an explanation.")] = False,
    out: Annotated[Path | None, typer.Option(help="Explanations file (default: beside --db).")] = None,
    pool: Annotated[int, typer.Option(min=8, help="Contexts run to find where features are silent.")] = 256,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one answer.")] = 120.0,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a failed request (with backoff).")] = 4,
    device: Annotated[str | None, typer.Option(help="torch device for --hf and the negatives.")] = None,
) -> None:
    """Explain features in one line each with a language model, and score the explanations (detection, fuzzing);
    written beside the store as each is done. Run the same command again to resume."""
    settings = get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    keys = _list_keys(list_id, settings.app_db.url) if list_id else None  # before the model code loads: fails fast
    from qscope.explain.command import Explainer, ExplainUsage, FeatureChoice, run_explain
    from qscope.explain.runner import ExplainOptions
    from qscope.store.queries import StoreError

    choice = FeatureChoice(sae or [], features, top, keys)
    ex = Explainer(
        endpoint,
        explainer_model,
        hf,
        scorer_model,
        settings.explain.api_key,
        timeout,
        retries,
        device or settings.runtime.device,
    )
    opts = ExplainOptions(concurrency=concurrency, score=score, redo=redo, seed=settings.runtime.seed)
    try:
        summary = run_explain(db, out, choice, ex, opts, pool, console)
    except (ExplainUsage, StoreError) as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    except KeyboardInterrupt as err:
        say("interrupted: what was finished is written; run the same command again to carry on", "yellow")
        raise typer.Exit(130) from err
    say(
        f"explained {summary.explained}, scored {summary.scored} ({summary.at_chance} at chance), failed "
        f"{len(summary.failed)}, skipped "
        f"{summary.skipped} (done before) in {summary.seconds:.1f} s"
    )
    if summary.at_chance:
        say(
            f"{summary.at_chance} of the {summary.scored} scored explanations score at chance (neither score's 95% "
            "interval lies above 0.5): they say nothing to trust, and pages and search mark them so",
            "yellow",
        )
    if summary.cut:
        say(f"{summary.cut} explainer prompts were cut (fewer contexts shown) to fit the explainer's context", "yellow")
    if summary.stopped:
        say(f"stopped early: {summary.stopped}; run the same command again to carry on", "red")
        raise typer.Exit(3)
    if summary.failed:
        say(
            f"{len(summary.failed)} features failed (each said why above); run the same command again to retry them",
            "yellow",
        )
        raise typer.Exit(1)


@cli.command("explain-export")
def explain_export_cmd(
    db: Annotated[Path, typer.Option("--db", help="Feature store whose explanations to export.")],
    out: Annotated[Path, typer.Option(help="File to write: .jsonl, .parquet or .csv.")],
    notes: Annotated[bool, typer.Option("--notes/--no-notes", help="Include people's notes (app database).")] = True,
) -> None:
    """Export a store's explanations, scores and people's notes in bulk, one row per explained feature."""
    from qscope.explain.export import SUFFIXES, export_rows, write_export
    from qscope.explain.notes import NoteStore
    from qscope.explain.store import ExplanationReader, explanations_path
    from qscope.store.queries import Store, StoreError

    if out.suffix not in SUFFIXES:
        say(f"error: --out must end in {', '.join(SUFFIXES)}; got {out.name}", "red")
        raise typer.Exit(2)
    try:
        store = Store(db, timeout_s=300)
    except StoreError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    url = get_settings().app_db.url
    app_db = NoteStore(url) if notes and _db_exists(url) else None
    rows = export_rows(store, ExplanationReader(explanations_path(db)), app_db)
    write_export(rows, out)
    store.close()
    say(f"wrote {len(rows)} explained features to {out}")


def _db_exists(url: str) -> bool:
    """Whether the app database may hold notes: not an in-memory SQLite one (new with this process), nor a SQLite
    file never made."""
    from qscope.appdb import is_in_memory, is_missing_file

    return not (is_in_memory(url) or is_missing_file(url))


def _list_keys(list_id: str, app_db_url: str) -> list[tuple[str, int]]:
    from qscope.explain.notes import NoteStore

    found = NoteStore(app_db_url).get_list(list_id) if _db_exists(app_db_url) else None
    if found is None:
        say(f"error: no list {list_id!r} in the app database {app_db_url}", "red")
        raise typer.Exit(2)
    return [(i.sae_id, i.feature) for i in found.items]
