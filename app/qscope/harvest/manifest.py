"""A release manifest: one TOML file naming the models, SAEs and corpus of a whole release, harvested by one
command (``qscope harvest-release FILE [--ray auto]``) into one store per model or per SAE.

```toml
out_dir = "stores"                 # where the stores go (relative paths: relative to this file)
per = "model"                      # "model": stores/<model_id>.duckdb; "sae": stores/<model_id>/<sae_id>.duckdb
corpus = "corpus/"                 # a file, a folder or a Hugging Face dataset, for every model

[options]                          # any `qscope harvest` option, for every model
tokens = 3_145_728

[[models]]
model = "Qwen/Qwen3-1.7B-Base"     # hub id or checkpoint folder
repos = ["Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_100"]
layers = "0-27"                    # optional: "0-27", "0,4,8-11" or a list; default every layer
# saes = ["path/to/folder"]        # local SAE files or folders instead of (or beside) repos
# name = "..."                     # the store's name when two entries share a model; options override here too
```

A job whose stores exist with the same settings (their ``meta.settings``) is skipped, so running a manifest again
does only what is missing; within a job the spool keeps finished tasks (qscope.harvest.cluster). Qwen-Scope repos
are fetched with huggingface_hub (only the ``layer{n}.sae.pt`` files asked for); on a cluster the files must be
where every worker sees them (a shared Hugging Face cache, HF_HOME on a shared disk).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from rich.console import Console

from qscope.harvest.cluster import ClusterPlan, harvest_cluster
from qscope.harvest.ids import model_id_for, sae_id_for, unique_ids
from qscope.harvest.inputs import sae_files
from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.pools import Pool
from qscope.harvest.run import Indexer, format_summary
from qscope.sae.formats.qwen_scope import FILE_RE as QWEN_SCOPE_RE
from qscope.store.meta import read_meta

TOP_KEYS = {"out_dir", "per", "corpus", "options", "models"}
ENTRY_KEYS = {"model", "repos", "saes", "layers", "name"}
OPTION_KEYS = {f.name for f in fields(HarvestOptions)} - {"model", "saes", "out", "resume", "stop_after", "extra"}
_LAYERS_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


class ManifestError(HarvestError):
    """A manifest that cannot be read; the message names the file and the key."""


@dataclass
class ReleaseJob:
    """One model's harvest: the repos still to fetch, then options whose `saes` are the files themselves."""

    name: str
    opts: HarvestOptions  # opts.saes: local paths; repos are added by resolve()
    repos: list[str]
    layers: list[int] | None
    per_sae_dir: Path | None  # per = "sae": the folder of its stores; opts.out then only names the spool

    def resolve(self, download: bool = True) -> HarvestOptions:
        """The options with every SAE as a file: repos fetched (or found in the local cache only, when not
        `download`), layers picked, sorted by layer."""
        fetched = [f for repo in self.repos for f in fetch_repo(repo, self.layers, download)]
        files = sae_files(self.opts.saes) + fetched
        if self.layers is not None:
            files = [f for f in files if _layer(f) in self.layers]
        order = sorted(range(len(files)), key=lambda i: (_layer(files[i]) is None, _layer(files[i]) or 0, i))
        self.opts.saes = [files[i] for i in order]
        self.repos = []
        return self.opts

    def outputs(self) -> list[Path]:
        """The stores this job writes (resolve() first)."""
        if self.per_sae_dir is None:
            return [self.opts.out]
        ids = unique_ids([sae_id_for(f, _layer(f)) for f in self.opts.saes])
        return [self.per_sae_dir / f"{i}.duckdb" for i in ids]

    def done(self) -> bool:
        """Every store exists and was harvested with these very settings."""
        want = json.dumps(self.opts.settings())
        return all(_settings_of(p) == want for p in self.outputs())


def load_manifest(path: Path) -> list[ReleaseJob]:
    """The jobs of a manifest, in file order; any problem is a ManifestError naming the key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(f"cannot read the manifest {path}: {e}") from e
    _check_keys(path, "the top level", doc, TOP_KEYS)
    base = path.parent
    if doc.get("per", "model") not in ("model", "sae"):
        raise ManifestError(f'{path}: per must be "model" or "sae", got {doc["per"]!r}')
    if not isinstance(doc.get("models"), list) or not doc["models"]:
        raise ManifestError(f"{path}: no [[models]] entry")
    out_dir = base / Path(str(doc.get("out_dir", "."))).expanduser()  # absolute stays absolute
    jobs = [_job(path, n, entry, doc, out_dir) for n, entry in enumerate(doc["models"], 1)]
    names = [j.name for j in jobs]
    if len(set(names)) < len(names):
        raise ManifestError(f"{path}: two [[models]] entries write {max(names, key=names.count)!r}: give one a name")
    return jobs


def _job(path: Path, n: int, entry: dict, doc: dict, out_dir: Path) -> ReleaseJob:
    where = f"[[models]] entry {n}"
    if not isinstance(entry, dict) or "model" not in entry:
        raise ManifestError(f"{path}: {where} has no model")
    options = {**doc.get("options", {}), **{k: v for k, v in entry.items() if k not in ENTRY_KEYS}}
    _check_keys(path, where, options, OPTION_KEYS)
    base = path.parent
    corpus = options.pop("corpus", doc.get("corpus"))
    if corpus is None:
        raise ManifestError(f"{path}: {where} has no corpus (set corpus at the top or in the entry)")
    repos, saes = _str_list(path, where, entry, "repos"), _str_list(path, where, entry, "saes")
    if not repos and not saes:
        raise ManifestError(f"{path}: {where} names no SAEs (repos or saes)")
    model = _local(base, entry["model"])
    name = str(entry.get("name") or model_id_for(model))
    per_sae = out_dir / name if doc.get("per", "model") == "sae" else None
    out = per_sae / ".harvest.duckdb" if per_sae else out_dir / f"{name}.duckdb"
    try:
        opts = HarvestOptions(
            model=model,
            saes=[Path(_local(base, s)) for s in saes],
            corpus=_local(base, corpus),
            out=out,
            extra={"release": path.stem},
            **options,
        )
    except TypeError as e:
        raise ManifestError(f"{path}: {where}: {e}") from e
    return ReleaseJob(name, opts, repos, _layers(path, where, entry.get("layers")), per_sae)


def fetch_repo(repo: str, layers: list[int] | None, download: bool = True) -> list[Path]:
    """The layer{n}.sae.pt files of a Qwen-Scope repo: a local folder, or fetched from the hub (not
    `download`: only what the local Hugging Face cache holds)."""
    if Path(repo).expanduser().is_dir():
        folder = Path(repo).expanduser()
    else:
        from huggingface_hub import snapshot_download

        wanted = [f"layer{n}.sae.pt" for n in layers] if layers is not None else ["layer*.sae.pt"]
        try:
            folder = Path(snapshot_download(repo, allow_patterns=wanted, local_files_only=not download))
        except Exception as e:  # offline, unknown repo, network: huggingface_hub raises many types
            raise ManifestError(f"cannot fetch the SAE repo {repo}: {str(e).splitlines()[0]}") from e
    # every file kept matched QWEN_SCOPE_RE, so has a layer: `or 0` only satisfies the type
    files = sorted((f for f in folder.iterdir() if QWEN_SCOPE_RE.match(f.name)), key=lambda f: _layer(f) or 0)
    if not files:
        raise ManifestError(f"the SAE repo {repo} holds no layer{{n}}.sae.pt files")
    return files


def _layer(file: Path) -> int | None:
    match = QWEN_SCOPE_RE.match(Path(file).name)
    return int(match.group(1)) if match else None


def _layers(path: Path, where: str, value) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, int) and v >= 0 for v in value):
        return sorted(set(value))
    if isinstance(value, str) and _LAYERS_RE.fullmatch(value.replace(" ", "")):
        out: set[int] = set()
        for part in value.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
        return sorted(out)
    raise ManifestError(f'{path}: {where}: layers must be like "0-27", "0,4,8-11" or a list of ints')


def _str_list(path: Path, where: str, entry: dict, key: str) -> list[str]:
    value = entry.get(key, [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{path}: {where}: {key} must be a string or a list of strings")
    return value


def _check_keys(path: Path, where: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ManifestError(f"{path}: unknown key {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})")


def _local(base: Path, value: str) -> str:
    """A path relative to the manifest when it exists there, else the value itself (a hub id, a dataset)."""
    candidate = base / Path(value).expanduser()
    return str(candidate) if not Path(value).is_absolute() and candidate.exists() else str(value)


def _settings_of(store: Path) -> str | None:
    """The settings JSON a finished store records, or None when there is no readable store."""
    meta = read_meta(store)
    return meta.get("settings") if meta else None


def run_release(
    jobs: list[ReleaseJob],
    pool: Pool,
    console: Console,
    plan: ClusterPlan | None = None,
    dry_run: bool = False,
    indexer: Indexer | None = None,
) -> list[str]:
    """Harvest every job not done yet, one after another (each spread over the pool). A job that fails is
    reported and the next one goes on; returns the names of the failed jobs."""
    failed = []
    for n, job in enumerate(jobs, 1):
        head = f"[{n}/{len(jobs)}] {job.name}"
        try:
            opts = job.resolve(download=not dry_run)
            outs = job.outputs()
            if job.done():
                console.print(f"{head}: done, skipped ({len(outs)} store(s) with these settings)")
                continue
            console.print(f"{head}: {len(opts.saes)} SAEs -> {job.per_sae_dir or opts.out}")
            if not dry_run:
                summary = harvest_cluster(opts, pool, console, plan, job.per_sae_dir, indexer)
                console.print(format_summary(summary), markup=False, highlight=False)
        except HarvestError as e:
            console.print(f"{head}: failed: {e}", style="red", markup=False, highlight=False)
            failed.append(job.name)
    return failed
