"""`qscope harvest` (one process, or sharded over Ray) and `qscope harvest-release` (every model of a release)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from qscope.cli.app import DEMO_MODEL_ID, cli, console, say
from qscope.config import get_settings

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


class IndexEmbedder(StrEnum):
    """The choices of --index-embedder (qscope.search.semantic.EMBEDDERS)."""

    auto = "auto"
    minilm = "minilm"
    static = "static"


IndexEmbedderOpt = Annotated[
    IndexEmbedder,
    typer.Option(
        help="What embeds the search index: minilm (all-MiniLM-L6-v2 per text: ~90 texts/s on 2 CPU cores, thousands "
        "on a GPU), static (its token vectors averaged: ~14,000 texts/s on a CPU, coarser) or auto (minilm on a GPU "
        "or up to 50,000 features, static above that on a CPU).",
    ),
]


def _indexer(device: str = "cpu", embedder: str = "auto"):
    """The semantic index builder the harvest calls once a store is written (qscope.search.semantic), embedding
    on the harvest's device with the chosen embedder; it says when the static vectors were used."""
    from qscope.model import pick_device
    from qscope.search.semantic import index_embedder, index_store
    from qscope.search.static import StaticEmbedder

    cache_dir = get_settings().paths.cache_dir
    try:
        on = str(pick_device(device))
    except ValueError:  # a bad --device: the harvest itself reports it
        on = "cpu"

    def build(path: Path, progress) -> int:
        n = index_store(path, progress, cache_dir, on, embedder)
        if embedder == "auto" and index_embedder(path, cache_dir) == StaticEmbedder.name:
            say(
                f"search index of {path.name}: static token vectors ({n:,} features on a CPU, where MiniLM would "
                "take hours; coarser); --index-embedder minilm to use MiniLM"
            )
        return n

    return build


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
    model_id: Annotated[
        str | None,
        typer.Option(
            "--model-id",
            help="The model's name in URLs and pages (default: the hub id's or checkpoint folder's name; "
            f"{DEMO_MODEL_ID} for the demo's model).",
        ),
    ] = None,
    tokens: Annotated[int, typer.Option(help="Tokens to harvest (fewer if the corpus is shorter).")] = 1_000_000,
    ctx: Annotated[int, typer.Option(help="Tokens per window.")] = 128,
    batch: Annotated[int, typer.Option(help="Windows per forward pass.")] = 32,
    top_k: Annotated[int, typer.Option("--top-k", help="Top contexts kept per feature.")] = 32,
    dedup: Annotated[
        float,
        typer.Option(
            help="Top contexts sharing at least this fraction of their tokens with a stronger one count once "
            "(near-duplicate passages); 0 keeps them all."
        ),
    ] = 0.8,
    before: Annotated[int, typer.Option(help="Context tokens kept before the max token.")] = 32,
    after: Annotated[int, typer.Option(help="Context tokens kept after it.")] = 8,
    skip_first: Annotated[bool, typer.Option("--skip-first/--keep-first", help="Leave position 0 out.")] = True,
    sink_norm_ratio: Annotated[
        float, typer.Option(help="Leave out tokens with residual norm > this x the batch median; 0 keeps all.")
    ] = 10.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the interval sampling (default: QSCOPE_SEED).")] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: QSCOPE_DEVICE).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (default: QSCOPE_DTYPE).")] = None,
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
    index_embedder: IndexEmbedderOpt = IndexEmbedder.auto,
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
    if model is None and not (settings.paths.demo_dir / "model").is_dir():
        say(
            f"error: no demo model in {settings.paths.demo_dir}: run `qscope build-demo` first, or pass --model, "
            "--sae and --corpus",
            "red",
        )
        raise typer.Exit(2)
    if model is None:
        model, model_id = str(settings.paths.demo_dir / "model"), model_id or DEMO_MODEL_ID
    opts = HarvestOptions(
        model=model,
        saes=sae or [settings.paths.demo_dir / "saes"],
        corpus=corpus or str(settings.paths.demo_dir / "corpus" / "train.jsonl"),
        out=out or settings.paths.data_dir / f"{model_id_for(model)}.duckdb",
        model_id=model_id,
        tokens=tokens,
        ctx=ctx,
        batch=batch,
        top_k=top_k,
        dedup=dedup,
        before=before,
        after=after,
        skip_first=skip_first,
        sink_norm_ratio=sink_norm_ratio,
        seed=settings.runtime.seed if seed is None else seed,
        device=device or settings.runtime.device,
        dtype=dtype or settings.runtime.dtype,
        checkpoint_every=checkpoint_every,
        resume=resume,
        stop_after=stop_after,
        card_workers=card_workers,
    )
    indexer = _indexer(opts.device, index_embedder.value) if index else None

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
    index_embedder: IndexEmbedderOpt = IndexEmbedder.auto,
) -> None:
    """Harvest every model of a release manifest into one store per model or per SAE, skipping the stores
    already harvested with the same settings (docs/harvest-at-scale.md)."""
    from qscope.harvest.manifest import ManifestError, load_manifest, run_release

    try:
        jobs = load_manifest(manifest)
    except ManifestError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    pool, plan = _pool_and_plan(ray, shard_tokens, saes_per_task, task_gb, gpus_per_task)
    try:
        failed = run_release(
            jobs,
            pool,
            console,
            plan,
            dry_run=dry_run,
            indexer=_indexer(get_settings().runtime.device, index_embedder.value),
        )
    finally:
        pool.close()
    if failed:
        say(
            f"{len(failed)} of {len(jobs)} jobs failed: {', '.join(failed)}; run the same command again to finish them",
            "red",
        )
        raise typer.Exit(1)
