"""What `qscope discover` and `qscope footprint` share: messages and progress bars on stderr, the model and SAEs
to run (from a feature store, which also gives labels and the demo corpus, or from model and SAE paths), and the
example files given on the command line."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import typer
from qscope.config import get_settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def say(text: str, style: str = "") -> None:
    console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)


def fail(text: str, code: int = 2) -> typer.Exit:
    say(f"error: {text}", "red")
    return typer.Exit(code)


def bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def progress_fn(bars: Progress) -> Callable[[str, int, int], None]:
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


def read_side(paths: list[Path] | None, text_column: str) -> list[str]:
    from qscope.discover.examples import read_file

    out: list[str] = []
    for p in paths or []:
        if not p.is_file():
            raise fail(f"no such file: {p}")
        out += [
            t for t, _ in read_file(p.name, p.read_text(encoding="utf-8", errors="replace"), text_field=text_column)
        ]
    return out


def limits(max_examples: int | None):
    from qscope.discover.examples import ExampleLimits

    settings = get_settings()
    return ExampleLimits(
        max_examples=max_examples or 20 * settings.discover_max_examples,
        max_chars=settings.max_chars,
        max_file_bytes=1 << 62,
    )


def cli_runner(served, settings, sae_ids=None):
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


def write_json(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"
