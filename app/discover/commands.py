"""`qscope discover` and `qscope footprint`: the same work as the server's pages, run here without a server.

The model and SAEs come from a feature store (`--db`, which also gives the features' labels and the demo corpus)
or from `--model` / `--sae` (the demo's by default). Progress goes to stderr as bars, one per phase; the figures
go to stdout, a JSON line last. `--save` keeps the result in the app database (Settings.app_db_url), where
`qscope serve` shows it at its permalink.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from qscope.config import get_settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
DETECTOR_RE = re.compile(r"top(\d)?(?:-(any|all))?|logreg")


def say(text: str, style: str = "") -> None:
    console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)


def fail(text: str, code: int = 2) -> typer.Exit:
    say(f"error: {text}", "red")
    return typer.Exit(code)


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _progress_fn(bars: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total or None)
        bars.update(tasks[phase], completed=done, total=total or None)

    return progress


def load_served(db: Path | None, model: str | None, sae: list[Path] | None, device: str | None, dtype: str | None):
    """A `Served` for the CLI: from a feature store (labels, corpus) or from model and SAE paths."""
    import torch
    from qscope.discover.demo import corpus_dir_of
    from qscope.discover.service import Served
    from qscope.live.runner import LiveModel, LiveUnavailable
    from qscope.store.queries import Store, StoreError

    settings = get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, dtype = device or settings.device, dtype or settings.dtype
    if db is None and model is None:
        db = _default_store(settings)
    if db is not None:
        try:
            store = Store(db)
        except StoreError as e:
            raise fail(str(e)) from e
        model_id = store.model_ids[0]
        live = LiveModel(store, model_id, device if device != "auto" else "auto", dtype)
        try:
            lm, saes = live.load()
        except LiveUnavailable as e:
            raise fail(str(e)) from e
        settings_json = json.loads(store.meta.get("settings") or "{}")
        corpus = corpus_dir_of(store.model_source, settings_json.get("corpus"))
        return Served(
            model_id,
            lm.model,
            lm.tokenizer,
            saes,
            threading.Lock(),
            live.skip_first,
            live.sink_norm_ratio,
            store.label,
            store.decode,
            corpus,
        )
    return _served_from_paths(model, sae, device, dtype, settings, Served, torch)


def _default_store(settings) -> Path | None:
    from qscope.harvest.ids import model_id_for

    model = settings.demo_dir / "model"
    if not model.is_dir():
        return None
    db = settings.data_dir / f"{model_id_for(str(model))}.duckdb"
    return db if db.is_file() else None


def _served_from_paths(model, sae, device, dtype, settings, Served, torch):
    from qscope.harvest.ids import model_id_for, sae_id_for, unique_ids
    from qscope.model import ModelLoadError, load_model
    from qscope.sae import SaeFormatError, find_sae_files, load_sae

    model = model or str(settings.demo_dir / "model")
    if not Path(model).is_dir() and model.startswith((".", "/")):
        raise fail(f"no model at {model}: run `qscope build-demo` first, or pass --db or --model")
    try:
        lm = load_model(model, device=device, dtype=dtype)
        files = [f for p in (sae or [settings.demo_dir / "saes"]) for f in (find_sae_files(p) if p.is_dir() else [p])]
        loaded = [load_sae(f, device=lm.device) for f in files]
        saes = dict(
            zip(unique_ids([sae_id_for(f, s.layer) for f, s in zip(files, loaded, strict=True)]), loaded, strict=True)
        )
    except (ModelLoadError, SaeFormatError, OSError) as e:
        raise fail(str(e)) from e
    if not saes:
        raise fail("no SAE files found: pass --sae")
    corpus = Path(model).parent / "corpus"
    vocab = lm.tokenizer.convert_ids_to_tokens

    return Served(
        model_id_for(model),
        lm.model,
        lm.tokenizer,
        saes,
        threading.Lock(),
        True,
        10.0,
        lambda s, f: "",
        lambda ids: [lm.tokenizer.convert_tokens_to_string([t]) for t in vocab(ids)],
        corpus if (corpus / "train.jsonl").is_file() else None,
    )


def _read_side(paths: list[Path] | None, text_column: str) -> list[str]:
    from qscope.discover.examples import read_file

    out: list[str] = []
    for p in paths or []:
        if not p.is_file():
            raise fail(f"no such file: {p}")
        out += [
            t for t, _ in read_file(p.name, p.read_text(encoding="utf-8", errors="replace"), text_field=text_column)
        ]
    return out


def _limits(max_examples: int | None):
    from qscope.discover.examples import ExampleLimits

    settings = get_settings()
    return ExampleLimits(
        max_examples=max_examples or 20 * settings.discover_max_examples,
        max_chars=settings.max_chars,
        max_file_bytes=1 << 62,
    )


def discover_cmd(
    pos: Annotated[
        list[Path] | None,
        typer.Option(
            "--pos",
            help="File of set A's examples (.txt one per line or blocks between --- lines, .jsonl, .csv); repeatable.",
        ),
    ] = None,
    neg: Annotated[list[Path] | None, typer.Option("--neg", help="File of set B's examples; repeatable.")] = None,
    data: Annotated[Path | None, typer.Option(help="One labelled .csv/.jsonl holding both sets.")] = None,
    label_column: Annotated[str, typer.Option(help="The label column of --data.")] = "label",
    text_column: Annotated[str, typer.Option(help="The text column (.csv) or field (.jsonl).")] = "text",
    positive: Annotated[str | None, typer.Option(help="The label value of set A (default: 1/true/yes/pos).")] = None,
    demo: Annotated[
        str | None,
        typer.Option(
            help="A demo set of the corpus instead: code-vs-prose, "
            "docstrings-vs-code, fortunes-vs-jargon, docs-vs-fortunes."
        ),
    ] = None,
    demo_n: Annotated[int, typer.Option(help="Examples per side of a demo set.")] = 100,
    db: Annotated[
        Path | None,
        typer.Option(help="Feature store whose model, SAEs and labels to use (default: the demo's, when harvested)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model folder or hub id instead of --db.")] = None,
    sae: Annotated[list[Path] | None, typer.Option("--sae", help="SAE file or folder (with --model).")] = None,
    test_share: Annotated[float, typer.Option(help="Share of each set held out for testing.")] = 0.3,
    seed: Annotated[int | None, typer.Option(help="Seed (default: Settings.seed).")] = None,
    top: Annotated[int, typer.Option(help="Features listed per side.")] = 20,
    max_tokens: Annotated[int | None, typer.Option(help="Cut examples to this many tokens.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Most examples per set.")] = None,
    logreg: Annotated[bool, typer.Option("--logreg/--no-logreg", help="Fit the L1 logistic regression.")] = True,
    out: Annotated[Path | None, typer.Option(help="Write the whole result as JSON here.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Keep the discovery in the app database.")] = False,
    detector: Annotated[
        str | None,
        typer.Option(
            help="Fit and save a detector (implies --save): top (the top "
            "feature), topN-any / topN-all (a rule over the top N <= 5), or logreg."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: Settings.device).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: Settings.dtype).")] = None,
) -> None:
    """Find the features that tell set A (the behaviour) from set B: ranked on a train split, validated on a
    held-out test split, beside a random-feature baseline and a label-shuffle control."""
    from qscope.discover.activations import Cancelled
    from qscope.discover.discovery import DiscoverOptions, discover
    from qscope.discover.examples import ExamplesError
    from qscope.discover.requests import ExamplesIn, FileIn, example_set

    settings = get_settings()
    if detector is not None and not DETECTOR_RE.fullmatch(detector):
        raise fail(f"--detector {detector!r}: give top, top3-any, top2-all (N up to 5) or logreg")
    if not (pos or neg or data or demo):
        raise fail("give the examples: --pos FILE --neg FILE, --data FILE (with a label column) or --demo NAME")
    served = load_served(db, model, sae, device, dtype)
    seed = settings.seed if seed is None else seed
    limits = _limits(max_examples)
    try:
        req = ExamplesIn(
            a=_read_side(pos, text_column),
            b=_read_side(neg, text_column),
            demo=demo,
            demo_n=demo_n,
            labelled_file=FileIn(name=data.name, content=data.read_text(encoding="utf-8", errors="replace"))
            if data
            else None,
            label_column=label_column,
            text_column=text_column,
            positive_label=positive,
            name_a=", ".join(p.name for p in pos or []),
            name_b=", ".join(p.name for p in neg or []),
        )
        examples = example_set(req, limits, served.corpus_dir, seed)
        options = DiscoverOptions(test_share=test_share, seed=seed, top=top, logreg=logreg or detector == "logreg")
    except (ExamplesError, ValueError) as e:
        raise fail(str(e).splitlines()[0]) from e
    for note in examples.notes:
        say(f"note: {note}", "yellow")
    try:
        with _bars() as bars:
            d = discover(
                examples,
                _cli_runner(served, settings),
                served.tokenizer,
                served.model_id,
                options,
                max_tokens or settings.discover_max_tokens,
                served.label_of,
                _progress_fn(bars),
            )
    except (KeyboardInterrupt, Cancelled) as e:
        raise fail("interrupted: nothing was written or saved", 130) from e
    _print_discovery(d)
    summary = _summary(d)
    if save or detector:
        summary |= _save(d, detector, served, settings)
    if out is not None:
        _write_json(out, d.model_dump_json(indent=1))
        summary["out"] = str(out)
    typer.echo(json.dumps(summary))


def _cli_runner(served, settings, sae_ids=None):
    from qscope.discover.activations import Runner

    saes = served.saes if sae_ids is None else {s: served.saes[s] for s in sae_ids}
    pad = served.tokenizer.pad_token_id
    return Runner(
        served.model,
        saes,
        served.skip_first,
        served.sink_norm_ratio,
        settings.discover_batch_tokens,
        pad_id=pad if pad is not None else 0,
    )


def _write_json(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def _print_discovery(d) -> None:
    from rich.table import Table

    r = d.ranking
    n_tr, n_te = len(d.train), len(d.test)
    table = Table(
        title=f"{d.names[0]} vs {d.names[1]}: {len(d.examples)} examples ({n_tr} train, {n_te} test), "
        f"{r.n_live:,} of {r.n_features:,} features fire"
    )
    for col in ("#", "sae_id", "feature", "label", "train AUROC", "test AUROC", "test F1", "mean diff"):
        table.add_column(col)
    for i, s in enumerate(r.a_side, 1):
        table.add_row(
            str(i),
            s.sae_id,
            str(s.feature),
            d.label(s.sae_id, s.feature)[:40],
            _fmt(s.train_auroc),
            _fmt(s.test_auroc),
            _fmt(s.test_f1),
            _fmt(s.mean_diff),
        )
    console.print(table)
    say(
        f"random features (n={r.baseline.n}): test AUROC mean {_fmt(r.baseline.mean)}, 95th percentile "
        f"{_fmt(r.baseline.p95)}, max {_fmt(r.baseline.max)}"
    )
    say(
        f"label-shuffle control ({r.shuffle.n} shuffles): top feature's test AUROC {_fmt(r.shuffle.test_mean)} ± "
        f"{_fmt(r.shuffle.test_sd)} (chance spread {_fmt(r.shuffle.null_sd)})"
    )
    if d.logreg:
        t = d.logreg.test
        say(
            f"L1 logistic regression ({len(d.logreg.detector.terms)} features, C={d.logreg.detector.C:g}): test "
            f"precision {_fmt(t.precision)}, recall {_fmt(t.recall)}, F1 {_fmt(t.f1)}, AUROC {_fmt(t.auroc)}"
        )


def _summary(d) -> dict:
    r, top = d.ranking, d.ranking.a_side[0] if d.ranking.a_side else None
    out = {
        "model_id": d.model_id,
        "examples": len(d.examples),
        "train": len(d.train),
        "test": len(d.test),
        "features": r.n_features,
        "live": r.n_live,
        "baseline_p95": r.baseline.p95,
        "shuffle_test_mean": r.shuffle.test_mean,
        "shuffle_test_sd": r.shuffle.test_sd,
        "seconds": round(sum(d.seconds.values()), 2),
    }
    if top is not None:
        out |= {"top": f"{top.sae_id}/{top.feature}", "top_test_auroc": top.test_auroc, "top_test_f1": top.test_f1}
    if d.logreg:
        out |= {"logreg_test_f1": d.logreg.test.f1, "logreg_features": len(d.logreg.detector.terms)}
    return out


def _save(d, detector: str | None, served, settings) -> dict:
    from qscope.discover.detecting import fit_on_discovery
    from qscope.discover.detectors import DetectorSpec, Term
    from qscope.discover.store import DiscoverStore, new_id

    store = DiscoverStore(settings.app_db_url)
    d.id = new_id()
    top = d.ranking.a_side[0].test_auroc if d.ranking.a_side else None
    store.save("discovery", d.id, d.model_id, f"{d.names[0]} vs {d.names[1]}", d.model_dump_json(), top)
    out = {"discovery": d.id, "discovery_url": f"/discover/{d.id}"}
    say(f"saved the discovery: /discover/{d.id} (app database {settings.app_db_url})")
    if detector:
        m = DETECTOR_RE.fullmatch(detector)
        if detector == "logreg":
            spec = DetectorSpec(kind="logreg")
        else:
            n = int(m.group(1) or 1)
            spec = DetectorSpec(
                kind="rule",
                combine=m.group(2) or "any",
                terms=[Term(sae_id=s.sae_id, feature=s.feature) for s in d.ranking.a_side[:n]],
            )
        saved = fit_on_discovery(d, spec, "", lambda ids: (_cli_runner(served, settings, ids), served.tokenizer))
        saved.id = new_id()
        store.save("detector", saved.id, saved.model_id, saved.name, saved.model_dump_json(), saved.test.f1)
        t = saved.test
        say(
            f"saved detector {saved.name!r}: /detectors/{saved.id} (test precision {_fmt(t.precision)}, recall "
            f"{_fmt(t.recall)}, F1 {_fmt(t.f1)}, AUROC {_fmt(t.auroc)})"
        )
        out |= {"detector": saved.id, "detector_url": f"/detectors/{saved.id}", "detector_test_f1": t.f1}
    store.close()
    return out


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
    model: Annotated[str | None, typer.Option(help="Model folder or hub id instead of --db.")] = None,
    sae: Annotated[list[Path] | None, typer.Option("--sae", help="SAE file or folder (with --model).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cut examples to this many tokens.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Most examples per dataset.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Keep the comparison in the app database.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device (default: Settings.device).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: Settings.dtype).")] = None,
) -> None:
    """The feature footprint of a dataset (and its comparison with a second): which features it activates,
    their overlap, how much of A's footprint B covers, the features only one has. Written as Parquet or DuckDB."""
    from qscope.discover import footprint_io
    from qscope.discover.activations import Cancelled
    from qscope.discover.examples import ExamplesError
    from qscope.discover.footprinting import run_footprints
    from qscope.discover.requests import ExamplesIn, datasets

    settings = get_settings()
    if by not in ("examples", "mass"):
        raise fail(f"--by {by!r}: give examples or mass")
    if not 0 < share <= 1:
        raise fail(f"--share {share}: give a share in (0, 1]")
    if out is not None and out.suffix not in footprint_io.SUFFIXES:
        raise fail(f"--out {out}: give a .parquet or .duckdb file name")
    if not (a or demo):
        raise fail("give dataset A's file(s) (and --b FILE to compare), or --demo NAME")
    served = load_served(db, model, sae, device, dtype)
    try:
        req = ExamplesIn(
            a=_read_side(a, text_column),
            b=_read_side(b, text_column),
            demo=demo,
            demo_n=demo_n,
            name_a=", ".join(p.name for p in a or []),
            name_b=", ".join(p.name for p in b or []),
        )
        texts_a, texts_b, names, notes = datasets(req, _limits(max_examples), served.corpus_dir)
    except (ExamplesError, ValueError) as e:
        raise fail(str(e).splitlines()[0]) from e
    for note in notes:
        say(f"note: {note}", "yellow")
    try:
        with _bars() as bars:
            rec, stats_a, stats_b = run_footprints(
                served.model_id,
                texts_a,
                texts_b,
                names,
                _cli_runner(served, settings),
                served.tokenizer,
                max_tokens or settings.discover_max_tokens,
                by,
                share,
                top,
                served.label_of,
                notes,
                _progress_fn(bars),
            )
    except (KeyboardInterrupt, Cancelled) as e:
        raise fail("interrupted: nothing was written or saved", 130) from e
    summary = _print_footprints(rec)
    if out is not None:
        labels = {(f.sae_id, f.feature): f.label for g in _label_groups(rec) for f in g}
        labels |= _all_labels(served, stats_a, stats_b)
        footprint_io.write(out, stats_a, stats_b, by, share, labels, {"model_id": served.model_id, "notes": notes})
        say(f"wrote {out}")
        summary["out"] = str(out)
    if save:
        from qscope.discover.store import DiscoverStore, new_id

        store = DiscoverStore(settings.app_db_url)
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
        say(f"saved: /footprints/{rec.id} (app database {settings.app_db_url})")
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
            f"overlap (Jaccard) {_fmt(c.overlap)}; {c.name_a} covered by {c.name_b} {_fmt(c.a_covered_by_b)} "
            f"(by mass {_fmt(c.a_covered_by_b_mass)}); {c.name_b} covered by {c.name_a} {_fmt(c.b_covered_by_a)}; "
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
