"""`qscope footprint`: the feature footprint of a dataset and its comparison with a second, without a server,
written as Parquet or DuckDB (qscope.discover.footprint_files) that the /footprints page can draw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qscope.config import get_settings
from qscope.discover.cli_common import cli_runner, console, fail, fmt, limits, load_served, read_side, say
from qscope.progress import PhaseProgress


def footprint_cmd(
    a: Annotated[
        list[Path] | None,
        typer.Argument(help="Dataset A's file(s) (.txt, .jsonl, .csv), and optionally B's after --b."),
    ] = None,
    b: Annotated[list[Path] | None, typer.Option("--b", help="Dataset B's file(s), to compare with A.")] = None,
    demo: Annotated[str | None, typer.Option(help="A demo set's two sides as A and B instead.")] = None,
    demo_n: Annotated[int, typer.Option(help="Examples per side of a demo set.")] = 200,
    out: Annotated[Path | None, typer.Option(help="Write the footprints here: .parquet or .duckdb.")] = None,
    by: Annotated[
        str,
        typer.Option(
            help="examples: features firing on at least --share of the examples; mass: "
            "the fewest features carrying --share of the activation mass."
        ),
    ] = "examples",
    share: Annotated[float, typer.Option(help="The share (see --by).")] = 0.2,
    top: Annotated[int, typer.Option(help="Features listed per group.")] = 20,
    text_column: Annotated[str, typer.Option(help="The text column (.csv) or field (.jsonl).")] = "text",
    db: Annotated[Path | None, typer.Option(help="Feature store whose model, SAEs and labels to use.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cut examples to this many tokens.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Most examples per dataset.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Keep the comparison in the app database.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device (default: QSCOPE_DEVICE).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: QSCOPE_DTYPE).")] = None,
) -> None:
    """The feature footprint of a dataset (and its comparison with a second): which features it activates,
    their overlap, how much of A's footprint B covers, the features only one has. Written as Parquet or DuckDB."""
    from qscope.discover import footprint_files
    from qscope.discover.examples import ExamplesError
    from qscope.discover.footprint_runs import run_footprints
    from qscope.discover.footprints import By
    from qscope.discover.requests import ExamplesIn, datasets
    from qscope.jobs import Cancelled

    settings = get_settings()
    if by not in ("examples", "mass"):
        raise fail(f"--by {by!r}: give examples or mass")
    mode: By = "mass" if by == "mass" else "examples"
    if not 0 < share <= 1:
        raise fail(f"--share {share}: give a share in (0, 1]")
    if out is not None and out.suffix not in footprint_files.SUFFIXES:
        raise fail(f"--out {out}: give a .parquet or .duckdb file name")
    if not (a or demo):
        raise fail("give dataset A's file(s) (and --b FILE to compare), or --demo NAME")
    served = load_served(db, device, dtype)
    try:
        req = ExamplesIn(
            a=read_side(a, text_column),
            b=read_side(b, text_column),
            demo=demo,
            demo_n=demo_n,
            name_a=", ".join(p.name for p in a or []),
            name_b=", ".join(p.name for p in b or []),
        )
        texts_a, texts_b, names, notes = datasets(req, limits(max_examples), served.corpus_dir)
    except (ExamplesError, ValueError) as e:
        raise fail(str(e).splitlines()[0]) from e
    for note in notes:
        say(f"note: {note}", "yellow")
    try:
        with PhaseProgress(console) as shown:
            rec, stats_a, stats_b = run_footprints(
                served.model_id,
                texts_a,
                texts_b,
                names,
                cli_runner(served, settings),
                served.tokenizer,
                max_tokens or settings.discover.max_tokens,
                mode,
                share,
                top,
                served.label_of,
                notes,
                shown.reporter(),
            )
    except (KeyboardInterrupt, Cancelled) as e:
        raise fail("interrupted: nothing was written or saved", 130) from e
    summary = _print_footprints(rec)
    if out is not None:
        labels = {(f.sae_id, f.feature): f.label for g in _label_groups(rec) for f in g}
        labels |= _all_labels(served, stats_a, stats_b)
        footprint_files.write(out, stats_a, stats_b, mode, share, labels, {"model_id": served.model_id, "notes": notes})
        say(f"wrote {out}")
        summary["out"] = str(out)
    if save:
        from qscope.discover.store import DiscoverStore, new_id

        store = DiscoverStore(settings.app_db.url)
        rec.id = new_id()
        name = names[0] if texts_b is None else f"{names[0]} vs {names[1]}"
        store.save(
            "footprint",
            rec.id,
            rec.model_id,
            name,
            rec.model_dump_json(),
            rec.comparison.overlap if rec.comparison else None,
        )
        store.close()
        say(f"saved: /footprints/{rec.id} (app database {settings.app_db.url})")
        summary["footprint_url"] = f"/footprints/{rec.id}"
    typer.echo(json.dumps(summary))


def _label_groups(rec) -> list:
    groups = [rec.a.top] + ([rec.b.top] if rec.b else [])
    return groups + ([rec.comparison.only_a, rec.comparison.only_b, rec.comparison.both] if rec.comparison else [])


def _all_labels(served, *stats) -> dict:
    """Labels of every feature that fired on a dataset (the file keeps a label per row)."""
    out = {}
    for s in stats:
        if s is None:
            continue
        for i in (s.fire_share > 0).nonzero()[0]:
            key = s.keys[i]
            out[key] = served.label_of(*key)
    return out


def _print_footprints(rec) -> dict:
    say(
        f"footprint by {rec.by} at share {rec.share:g}: {rec.a.name} {rec.a.size} features"
        + (f", {rec.b.name} {rec.b.size} features" if rec.b else "")
    )
    out = {
        "model_id": rec.model_id,
        "by": rec.by,
        "share": rec.share,
        "size_a": rec.a.size,
        "n_features": rec.n_features,
        "seconds": round(rec.seconds, 2),
    }
    c = rec.comparison
    if c is not None:
        say(
            f"overlap (Jaccard) {fmt(c.overlap)}; {c.name_a} covered by {c.name_b} {fmt(c.a_covered_by_b)} "
            f"(by mass {fmt(c.a_covered_by_b_mass)}); {c.name_b} covered by {c.name_a} {fmt(c.b_covered_by_a)}; "
            f"only {c.name_a}: {c.n_only_a}, only {c.name_b}: {c.n_only_b}, shared: {c.shared}"
        )
        for title, group in ((f"only {c.name_a}", c.only_a), (f"only {c.name_b}", c.only_b)):
            say(f"{title}: " + "; ".join(f"{f.sae_id}/{f.feature} {f.label[:30]!r}" for f in group[:5]))
        out |= {
            "size_b": rec.b.size,
            "overlap": c.overlap,
            "a_covered_by_b": c.a_covered_by_b,
            "b_covered_by_a": c.b_covered_by_a,
            "shared": c.shared,
            "only_a": c.n_only_a,
            "only_b": c.n_only_b,
        }
    return out
