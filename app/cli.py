"""The `qscope` command (typer): one subcommand per job; defaults come from Settings."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qscope.config import get_settings

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="qscope: explore the inside of Qwen models.")
console = Console(stderr=True)


# Options of the sharded harvest (qscope.harvest.cluster), shared by `harvest --ray` and `harvest-release`.
RayOpt = Annotated[
    str | None,
    typer.Option(
        help="Spread the harvest over Ray: auto (a running cluster or RAY_ADDRESS), local (start one on this "
        "machine) or host:port. Needs the cluster extra: pip install 'qscope\\[cluster]'.",
        rich_help_panel="Cluster",
    ),
]
ShardTokensOpt = Annotated[int, typer.Option(help="Corpus tokens per task.", rich_help_panel="Cluster")]
SaesPerTaskOpt = Annotated[
    int, typer.Option(help="At most this many SAEs per task; 0: as many as --task-gb holds.", rich_help_panel="Cluster")
]
TaskGbOpt = Annotated[
    float, typer.Option(help="Device memory (GB) for one task's SAE weights and states.", rich_help_panel="Cluster")
]
GpusPerTaskOpt = Annotated[
    float | None, typer.Option(help="GPUs per task (default: 1 when the cluster has GPUs).", rich_help_panel="Cluster")
]


def _pool_and_plan(ray: str | None, shard_tokens: int, saes_per_task: int, task_gb: float, gpus: float | None):
    """The pool (Ray, or this process when ray is None) and the task plan of a sharded harvest."""
    from qscope.harvest.cluster import ClusterPlan
    from qscope.harvest.pools import InlinePool, RayPool

    pool = RayPool(ray, gpus_per_task=gpus) if ray else InlinePool()
    return pool, ClusterPlan(shard_tokens=shard_tokens, task_gb=task_gb, saes_per_task=saes_per_task)


def _indexer(device: str = "cpu"):
    """The semantic index builder the harvest calls once a store is written (qscope.search.semantic), embedding
    on the harvest's device."""
    from functools import partial

    from qscope.model import pick_device
    from qscope.search.semantic import index_store

    try:
        return partial(index_store, device=str(pick_device(device)))
    except ValueError:  # a bad --device: the harvest itself reports it
        return index_store


def _spec(tiny: bool):
    from dataclasses import replace

    from qscope.demo.spec import FULL, TINY

    return replace(TINY if tiny else FULL, seed=get_settings().seed)


def _figures(report: dict) -> str:
    model, saes = report["model"], report["saes"]
    lines = [
        f"model: val loss {model['val_loss']:.3f} nats/token, unigram entropy {model['unigram_entropy']:.3f}",
    ]
    for layer, m in saes["layers"].items():
        lines.append(f"SAE layer {layer}: FVU {m['fvu']:.3f}, dead features {m['dead_fraction']:.1%}")
    lines.append(f"build time: {report['seconds']:.0f} s (stages reused where their settings matched)")
    return "\n".join(lines)


@cli.command("build-demo")
def build_demo_cmd(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: Settings.demo_dir).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="A micro version in under a minute, for tests.")] = False,
) -> None:
    """Build mini-Qwen offline: corpus, tokenizer, Qwen3 model and TopK SAEs (Qwen-Scope format)."""
    from qscope.demo.build import build_demo

    out = out or get_settings().demo_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = build_demo(out, _spec(tiny), console)
    console.print(_figures(report))
    console.print(f"built {out} (figures in {out / 'build.json'})")


@cli.command("demo")
def demo_cmd(
    out: Annotated[Path | None, typer.Option(help="Demo folder (default: Settings.demo_dir).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Use the micro build.")] = False,
    tokens: Annotated[int, typer.Option(help="Tokens to harvest from the demo corpus.")] = 300_000,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: Settings.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: Settings.port).")] = None,
    more: Annotated[
        list[Path] | None, typer.Option("--db", help="More stores (files or folders) to serve beside the default.")
    ] = None,
) -> None:
    """Build the embedded default if missing, harvest it if its feature store is missing, and serve it."""
    from qscope.harvest.ids import model_id_for
    from qscope.store.meta import is_current

    settings = get_settings()
    out = out or settings.demo_dir
    build_demo_cmd(out=out, tiny=tiny)
    db = settings.data_dir / f"{model_id_for(str(out / 'model'))}{'-tiny' if tiny else ''}.duckdb"
    built = max(p.stat().st_mtime for p in (out / "saes").rglob("stage.json"))
    if db.is_file() and db.stat().st_mtime > built and is_current(db):
        console.print(f"harvest: reusing {db}")
    else:
        harvest_cmd(
            model=str(out / "model"),
            sae=[out / "saes"],
            corpus=str(out / "corpus" / "train.jsonl"),
            out=db,
            tokens=tokens,
        )
    more = [p for p in more or [] if not p.is_dir() or any(p.glob("*.duckdb"))]  # an empty folder: nothing yet
    serve_cmd(db=[db, *more], host=host, port=port)


@cli.command("info")
def info_cmd(
    sae: Annotated[list[Path], typer.Argument(help="SAE files or folders to describe.")],
) -> None:
    """Describe SAE files: format, architecture, layer, d_in, d_sae, k."""
    from qscope.sae import SaeFormatError, find_sae_files, load_sae

    rows = []
    for root in sae:
        paths = find_sae_files(root) if root.is_dir() else [root]
        for path in paths or [root]:
            try:
                s = load_sae(path)
            except SaeFormatError as err:
                console.print(f"[red]error:[/] {err}")
                raise typer.Exit(2) from err
            rows.append(
                {
                    "path": str(path),
                    "format": s.format,
                    "architecture": s.architecture,
                    "layer": s.layer,
                    "site": s.site,
                    "d_in": s.d_in,
                    "d_sae": s.d_sae,
                    "k": s.k,
                }
            )
    typer.echo(json.dumps(rows, indent=2))


@cli.command("harvest")
def harvest_cmd(
    model: Annotated[str | None, typer.Option(help="Hub id or checkpoint folder (default: the demo's model).")] = None,
    sae: Annotated[
        list[Path] | None,
        typer.Option("--sae", help="SAE file or folder (every SAE below it); repeat for more (default: the demo's)."),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(
            help=".txt/.jsonl/.parquet file or folder, or a HF dataset (default: the demo's train split); or token "
            "windows taken as they are: .npy/.pt [windows, tokens], parquet with an input_ids or tokens column."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="DuckDB file to write (default: data/<model_id>.duckdb).")] = None,
    tokens: Annotated[int, typer.Option(help="Tokens to harvest (fewer if the corpus is shorter).")] = 1_000_000,
    ctx: Annotated[int, typer.Option(help="Tokens per window.")] = 128,
    batch: Annotated[int, typer.Option(help="Windows per forward pass.")] = 32,
    top_k: Annotated[int, typer.Option("--top-k", help="Top contexts kept per feature.")] = 32,
    before: Annotated[int, typer.Option(help="Context tokens kept before the max token.")] = 32,
    after: Annotated[int, typer.Option(help="Context tokens kept after it.")] = 8,
    skip_first: Annotated[bool, typer.Option("--skip-first/--keep-first", help="Leave position 0 out.")] = True,
    sink_norm_ratio: Annotated[
        float, typer.Option(help="Leave out tokens with residual norm > this x the batch median; 0 keeps all.")
    ] = 10.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the interval sampling (default: Settings.seed).")] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: Settings.device).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: Settings.dtype).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Batches between checkpoints; 0: none.")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint beside --out.")] = False,
    stop_after: Annotated[int | None, typer.Option(hidden=True, help="Stop after N batches (tests).")] = None,
    index: Annotated[
        bool,
        typer.Option(
            "--index/--no-index",
            help="Build the semantic search index beside the store, so `qscope serve` searches at once.",
        ),
    ] = True,
    card_workers: Annotated[int, typer.Option(help="Processes that build the feature cards; 0: one per core.")] = 0,
    ray: RayOpt = None,
    shard_tokens: ShardTokensOpt = 1 << 20,
    saes_per_task: SaesPerTaskOpt = 0,
    task_gb: TaskGbOpt = 40.0,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Harvest a model's SAE features over a corpus into one DuckDB feature store (with --ray: on a cluster)."""
    from qscope.harvest.ids import model_id_for
    from qscope.harvest.options import HarvestError, HarvestInterrupted, HarvestOptions
    from qscope.harvest.run import format_summary, harvest

    settings = get_settings()
    if model is None and not (settings.demo_dir / "model").is_dir():
        console.print(
            f"error: no demo model in {settings.demo_dir}: run `qscope build-demo` first, or pass --model, "
            "--sae and --corpus",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    model = model or str(settings.demo_dir / "model")
    opts = HarvestOptions(
        model=model,
        saes=sae or [settings.demo_dir / "saes"],
        corpus=corpus or str(settings.demo_dir / "corpus" / "train.jsonl"),
        out=out or settings.data_dir / f"{model_id_for(model)}.duckdb",
        tokens=tokens,
        ctx=ctx,
        batch=batch,
        top_k=top_k,
        before=before,
        after=after,
        skip_first=skip_first,
        sink_norm_ratio=sink_norm_ratio,
        seed=settings.seed if seed is None else seed,
        device=device or settings.device,
        dtype=dtype or settings.dtype,
        checkpoint_every=checkpoint_every,
        resume=resume,
        stop_after=stop_after,
        card_workers=card_workers,
    )
    indexer = _indexer(opts.device) if index else None

    def say(text: str, style: str) -> None:
        console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    from qscope.harvest.cluster import TasksFailed, harvest_cluster

    pool, plan = _pool_and_plan(ray, shard_tokens, saes_per_task, task_gb, gpus_per_task) if ray else (None, None)
    try:
        if pool is None:
            summary = harvest(opts, console, indexer=indexer)
        else:
            summary = harvest_cluster(opts, pool, console, plan, indexer=indexer)
    except TasksFailed as err:
        say(f"error: {err}", "red")
        raise typer.Exit(1) from err
    except HarvestInterrupted as err:
        say(str(err), "yellow")
        raise typer.Exit(3) from err
    except HarvestError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    except KeyboardInterrupt as err:
        if pool is not None:
            say(
                "interrupted; run the same command again: the finished tasks are kept in the spool beside --out",
                "yellow",
            )
        else:
            say(
                f"interrupted; rerun with --resume to continue from the last checkpoint (every {checkpoint_every} "
                "batches)",
                "yellow",
            )
        raise typer.Exit(130) from err
    finally:
        if pool is not None:
            pool.close()
    say(format_summary(summary), "")


@cli.command("harvest-release")
def harvest_release_cmd(
    manifest: Annotated[Path, typer.Argument(help="Release manifest (TOML): models, SAE repos or paths, corpus.")],
    ray: RayOpt = None,
    shard_tokens: ShardTokensOpt = 1 << 20,
    saes_per_task: SaesPerTaskOpt = 0,
    task_gb: TaskGbOpt = 40.0,
    gpus_per_task: GpusPerTaskOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the jobs and which are done.")] = False,
) -> None:
    """Harvest every model of a release manifest into one store per model or per SAE, skipping the stores
    already harvested with the same settings (docs/harvest-at-scale.md)."""
    from qscope.harvest.manifest import ManifestError, load_manifest, run_release

    try:
        jobs = load_manifest(manifest)
    except ManifestError as err:
        console.print(f"error: {err}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err
    pool, plan = _pool_and_plan(ray, shard_tokens, saes_per_task, task_gb, gpus_per_task)
    try:
        failed = run_release(jobs, pool, console, plan, dry_run=dry_run, indexer=_indexer(get_settings().device))
    finally:
        pool.close()
    if failed:
        console.print(
            f"{len(failed)} of {len(jobs)} jobs failed: {', '.join(failed)}; run the same command again to finish them",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def say(text: str, style: str = "") -> None:
    """One message on stderr, never wrapped or marked up (file names and errors stay on one line)."""
    console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)


def _stores(db: list[Path]) -> list[Path]:
    """The --db arguments with each folder replaced by the .duckdb files in it."""
    paths = []
    for p in db:
        found = sorted(p.glob("*.duckdb")) if p.is_dir() else [p]
        if not found:
            say(
                f"error: no .duckdb file in {p}: harvest one into it with `qscope harvest --out {p}/NAME.duckdb`", "red"
            )
            raise typer.Exit(2)
        paths += found
    return paths


@cli.command("serve")
def serve_cmd(
    db: Annotated[
        list[Path], typer.Option("--db", help="Feature store (.duckdb) or a folder of them to serve; repeatable.")
    ],
    host: Annotated[str | None, typer.Option(help="Address to bind (default: Settings.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: Settings.port).")] = None,
    workers: Annotated[int, typer.Option(help="Server processes (each opens the stores once).")] = 1,
) -> None:
    """Serve the explorer (feature dashboards, search, inspect, steering) for one or more feature stores.

    Every store, and the model and SAE files it records, is checked first: a missing or damaged one stops the
    server with one line saying which file and why."""
    import uvicorn

    from qscope.search.semantic import has_cached_index
    from qscope.store.preflight import PreflightError, preflight
    from qscope.store.queries import StoreError

    settings = get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    db = _stores(db)
    try:
        for warning in preflight(db):
            say(f"warning: {warning}", "yellow")
    except PreflightError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    for path in db:
        if not has_cached_index(path, settings.cache_dir):
            say(
                f"search: {path.name} has no semantic index yet (harvested without one): text search answers at once, "
                "the semantic index is being built in the background"
            )
    host, port = host or settings.host, port or settings.port
    run = partial(uvicorn.run, host=host, port=port, log_level="warning", server_header=False)
    if workers > 1:
        # each worker process builds its own app from these paths (uvicorn needs an import string)
        os.environ["QSCOPE_SERVE_DBS"] = json.dumps([str(p.resolve()) for p in db])
        run("qscope.web:app_from_env", factory=True, workers=workers)
        return
    from qscope.web import create_app

    try:
        app = create_app(db, settings)
    except StoreError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    say(f"serving {len(db)} store(s) on http://{host}:{port}/")
    run(app)


@cli.command("health")
def health_cmd(
    url: Annotated[str | None, typer.Option(help="URL to ask (default: /-/health on Settings.port here).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Exit 0 when the server answers its health URL with 200, else 1 (for container healthchecks)."""
    import urllib.request

    url = url or f"http://127.0.0.1:{get_settings().port}/-/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            ok = r.status == 200
    except OSError as err:
        say(f"unhealthy: {url}: {err}", "red")
        raise typer.Exit(1) from err
    if not ok:
        raise typer.Exit(1)


def _default_store() -> Path | None:
    """The demo's feature store, where `qscope demo` puts it, if it is there."""
    from qscope.harvest.ids import model_id_for

    settings = get_settings()
    db = settings.data_dir / f"{model_id_for(str(settings.demo_dir / 'model'))}.duckdb"
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
    overrides = {"prompts_path": prompts, "prompt_set": prompt_set, "strengths": sweep, "seeds": seeds}
    overrides |= {"random_controls": random_controls, "instruction": instruction}
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
    say(f"{len(result.rows)} rows in {result.seconds:.1f} s ({result.rows_per_s:.1f} rows/s); wrote {out}")


def _steer_eval(req, db: Path, batch_rows: int | None):
    """Plan and run an evaluation on the model of the store `db`, in this process."""
    from qscope.live.runner import LiveModels
    from qscope.steer.evaluate.jobs import eval_limits
    from qscope.steer.evaluate.local import plan_local, run_local
    from qscope.steer.service import Steering
    from qscope.steer.spec import SpecError
    from qscope.store.queries import Store

    settings = get_settings()
    store = Store(db)
    models = LiveModels([store], device=settings.device, dtype=settings.dtype)
    live = models.get(req.spec.model_id or store.model_ids[0])
    if live is None:
        raise SpecError(f"{db} has no model {req.spec.model_id!r}; it has {', '.join(store.model_ids)}")
    plan, target = plan_local(req, live, eval_limits(settings), Steering(settings).limits)
    return run_local(plan, target, console, batch_rows or settings.steer_eval_batch_rows)


bench_cli = typer.Typer(no_args_is_help=True, help="Benchmarks: each prints its figures, a JSON line last.")
cli.add_typer(bench_cli, name="bench")
_BENCH_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _run_bench(name: str, args: list[str]) -> None:
    """Run the benchmark module qscope.bench.<name> with `args` as its command line (its own argparse options;
    `--help` lists them)."""
    import importlib

    importlib.import_module(f"qscope.bench.{name}").main(args)


@bench_cli.command("serve", context_settings=_BENCH_ARGS)
def bench_serve_cmd(ctx: typer.Context) -> None:
    """Load-test `qscope serve` on a synthetic store at scale (`qscope bench serve --help` for the options)."""
    _run_bench("serve", list(ctx.args))


@bench_cli.command("harvest", context_settings=_BENCH_ARGS)
def bench_harvest_cmd(ctx: typer.Context) -> None:
    """Harvest vs forward + SAE encode alone on the same tokens (`qscope bench harvest --help`)."""
    _run_bench("harvest", list(ctx.args))


@bench_cli.command("real-shape", context_settings=_BENCH_ARGS)
def bench_real_shape_cmd(ctx: typer.Context) -> None:
    """The harvest at Qwen3-1.7B's shapes, every phase timed and projected (`qscope bench real-shape --help`)."""
    _run_bench("real_shape", list(ctx.args))


@bench_cli.command("steer", context_settings=_BENCH_ARGS)
def bench_steer_cmd(ctx: typer.Context) -> None:
    """Default + steered in one batch vs plain, hook overhead, 8 requests vs 1 (`qscope bench steer --help`)."""
    _run_bench("steer", list(ctx.args))


@bench_cli.command("attribute", context_settings=_BENCH_ARGS)
def bench_attribute_cmd(ctx: typer.Context) -> None:
    """One attribution of a 128-token prompt vs one forward pass of it (`qscope bench attribute --help`)."""
    _run_bench("attribute", list(ctx.args))


@bench_cli.command("load", context_settings=_BENCH_ARGS)
def bench_load_cmd(ctx: typer.Context) -> None:
    """Browsing and steering mixed at several times the steering capacity (`qscope bench load --help`)."""
    _run_bench("load", list(ctx.args))


@bench_cli.command("steer-eval", context_settings=_BENCH_ARGS)
def bench_steer_eval_cmd(ctx: typer.Context) -> None:
    """A batched evaluation sweep vs the same rows one request at a time, one server (`... --help`)."""
    _run_bench("steer_eval", list(ctx.args))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
