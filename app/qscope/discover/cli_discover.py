"""`qscope discover`: the features that tell two example sets apart, ranked on a train split and validated on a
held-out test split beside a random-feature baseline and a label-shuffle control, without a server. The figures
go to stdout, a JSON line last; `--save` and `--detector` keep the result (and a detector) in the app database
(QSCOPE_APP_DB_URL), where `qscope serve` shows them at their permalinks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from qscope.config import get_settings
from qscope.discover.cli_common import (
    cli_runner,
    console,
    examples_in,
    fail,
    fmt,
    limits,
    load_served,
    say,
    write_json,
)
from qscope.discover.ranking import reading
from qscope.progress import PhaseProgress

DETECTOR_RE = re.compile(r"top([1-5])?(?:-(any|all))?|logreg|(diffmean|probe)(?::(\S{1,200}))?")
DETECTOR_HELP = "give top, top3-any, top2-all (N up to 5), logreg, diffmean or probe (diffmean:SITE for another site)"


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
    test_share: Annotated[float, typer.Option(help="Share of each set held out for testing.")] = 0.3,
    seed: Annotated[int | None, typer.Option(help="Seed (default: QSCOPE_SEED).")] = None,
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
            "feature), topN-any / topN-all (a rule over the top N <= 5), logreg, or a baseline's direction on the "
            "residual: diffmean or probe (at the first hooked site; diffmean:model.layers.N for another)."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: QSCOPE_DEVICE).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: QSCOPE_DTYPE).")] = None,
) -> None:
    """Find the features that tell set A (the behaviour) from set B: ranked on a train split, validated on a
    held-out test split, beside a random-feature baseline and a label-shuffle control."""
    from qscope.discover.discovery import DiscoverOptions, discover
    from qscope.discover.examples import ExamplesError
    from qscope.discover.requests import example_set
    from qscope.jobs import Cancelled

    settings = get_settings()
    if detector is not None and not DETECTOR_RE.fullmatch(detector):
        raise fail(f"--detector {detector!r}: {DETECTOR_HELP}")
    if not (pos or neg or data or demo):
        raise fail("give the examples: --pos FILE --neg FILE, --data FILE (with a label column) or --demo NAME")
    served = load_served(db, device, dtype)
    seed = settings.runtime.seed if seed is None else seed
    example_limits = limits(max_examples)
    try:
        req = examples_in(pos, neg, data, demo, demo_n, label_column, text_column, positive)
        examples = example_set(req, example_limits, served.corpus_dir, seed)
        options = DiscoverOptions(test_share=test_share, seed=seed, top=top, logreg=logreg or detector == "logreg")
    except (ExamplesError, ValueError) as e:
        raise fail(str(e).splitlines()[0]) from e
    for note in examples.notes:
        say(f"note: {note}", "yellow")
    try:
        with PhaseProgress(console) as shown:
            d = discover(
                examples,
                cli_runner(served, settings),
                served.tokenizer,
                served.model_id,
                options,
                max_tokens or settings.discover.max_tokens,
                served.label_of,
                shown.reporter(),
            )
    except (KeyboardInterrupt, Cancelled) as e:
        raise fail("interrupted: nothing was written or saved", 130) from e
    _print_discovery(d)
    summary = _summary(d)
    if save or detector:
        from qscope.discover.detectors import DetectorError

        try:
            summary |= _save(d, detector, served, settings)
        except DetectorError as e:
            raise fail(str(e)) from e
    if out is not None:
        write_json(out, d.model_dump_json(indent=1))
        summary["out"] = str(out)
    typer.echo(json.dumps(summary))


def _print_discovery(d) -> None:
    from rich.table import Table

    r = d.ranking
    n_tr, n_te = len(d.train), len(d.test)
    table = Table(
        title=f"{d.names[0]} vs {d.names[1]}: {len(d.examples)} examples ({n_tr} train, {n_te} test), "
        f"{r.n_live:,} of {r.n_features:,} features fire"
    )
    releases = {s.sae_id.rsplit("__", 1)[0] for s in r.a_side}
    one_release = len(releases) == 1 and all("__" in s.sae_id for s in r.a_side)
    # the layer is what tells two rows apart: a cut sae_id ("SAE-Res-mini-qwe…") showed two layers' #2160 alike
    table.add_column("#")
    table.add_column(f"sae ({next(iter(releases))}__…)" if one_release else "sae_id", overflow="fold")
    for col in ("feature", "label", "train AUROC", "test AUROC", "test F1", "mean diff"):
        table.add_column(col)
    for i, s in enumerate(r.a_side, 1):
        table.add_row(
            str(i),
            s.sae_id.rsplit("__", 1)[1] if one_release else s.sae_id,
            str(s.feature),
            d.label(s.sae_id, s.feature)[:40],
            fmt(s.train_auroc),
            fmt(s.test_auroc),
            fmt(s.test_f1),
            fmt(s.mean_diff),
        )
    console.print(table)
    say(
        f"random features (n={r.baseline.n}): test AUROC mean {fmt(r.baseline.mean)}, 95th percentile "
        f"{fmt(r.baseline.p95)}, max {fmt(r.baseline.max)}"
    )
    say(
        f"label-shuffle control ({r.shuffle.n} shuffles): top feature's test AUROC {fmt(r.shuffle.test_mean)} ± "
        f"{fmt(r.shuffle.test_sd)} (chance spread {fmt(r.shuffle.null_sd)})"
    )
    if text := reading(r):
        say(text)
    if d.logreg:
        t = d.logreg.test
        say(
            f"L1 logistic regression ({len(d.logreg.detector.terms)} features, C={d.logreg.detector.C:g}): test "
            f"precision {fmt(t.precision)}, recall {fmt(t.recall)}, F1 {fmt(t.f1)}, AUROC {fmt(t.auroc)}"
        )
    for b in d.baselines or []:
        c = b.comparison
        say(f"against the baselines at {c.site}: {c.comparison.sentence}")
        for m in c.methods:
            lo, hi = m.auroc_interval
            say(f"  {m.method}: test AUROC {fmt(m.test_auroc)} ({fmt(lo)} to {fmt(hi)}), test F1 {fmt(m.test_f1)}")


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
    from qscope.discover.detector_runs import fit_on_discovery
    from qscope.discover.detectors import DetectorError, DetectorSpec, Term
    from qscope.discover.store import DiscoverStore, new_id

    store = DiscoverStore(settings.app_db.url)
    d.id = new_id()
    top = d.ranking.a_side[0].test_auroc if d.ranking.a_side else None
    store.save("discovery", d.id, d.model_id, f"{d.names[0]} vs {d.names[1]}", d.model_dump_json(), top)
    out = {"discovery": d.id, "discovery_url": f"/discover/{d.id}"}
    say(f"saved the discovery: /discover/{d.id} (app database {settings.app_db.url})")
    if detector:
        m = DETECTOR_RE.fullmatch(detector)
        if m is None:  # checked before the run; again here so that `m` is a match below
            raise fail(f"--detector {detector!r}: {DETECTOR_HELP}")
        if detector == "logreg":
            spec = DetectorSpec(kind="logreg")
        elif m.group(3):
            spec = DetectorSpec(kind=m.group(3), site=m.group(4))
        else:
            n = int(m.group(1) or 1)
            spec = DetectorSpec(
                kind="rule",
                combine=m.group(2) or "any",
                terms=[Term(sae_id=s.sae_id, feature=s.feature) for s in d.ranking.a_side[:n]],
            )
        try:
            saved = fit_on_discovery(d, spec, "", lambda ids: (cli_runner(served, settings, ids), served.tokenizer))
        except DetectorError as e:
            store.close()
            raise fail(f"--detector {detector!r}: {e}") from e
        saved.id = new_id()
        store.save("detector", saved.id, saved.model_id, saved.name, saved.model_dump_json(), saved.test.f1)
        t = saved.test
        say(
            f"saved detector {saved.name!r}: /detectors/{saved.id} (test precision {fmt(t.precision)}, recall "
            f"{fmt(t.recall)}, F1 {fmt(t.f1)}, AUROC {fmt(t.auroc)})"
        )
        out |= {"detector": saved.id, "detector_url": f"/detectors/{saved.id}", "detector_test_f1": t.f1}
    store.close()
    return out
