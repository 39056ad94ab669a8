"""What `qscope discover` and `qscope footprint` share: messages and progress bars on stderr, the model and SAEs
to run (those of a feature store, which also gives their ids, labels and the demo corpus), and the example files
given on the command line."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from qscope.config import get_settings

console = Console(stderr=True)


def say(text: str, style: str = "") -> None:
    console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)


def fail(text: str, code: int = 2) -> typer.Exit:
    say(f"error: {text}", "red")
    return typer.Exit(code)


def load_served(db: Path | None, device: str | None, dtype: str | None):
    """A `ServedModel` for the CLI from a feature store: its model and SAEs (the files the harvest read), their ids
    and labels as the server shows them, and the demo corpus when it has one."""
    return load_live(db, device, dtype)[0]


def load_live(db: Path | None, device: str | None, dtype: str | None):
    """(the ServedModel of load_served, the qscope.live.runner.LiveModel it was loaded from)."""
    from qscope.discover.demo import corpus_dir_of
    from qscope.discover.service import ServedModel
    from qscope.live.runner import LiveModel, LiveUnavailable
    from qscope.store.meta import settings_of
    from qscope.store.queries import Store, StoreError

    settings = get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    db = db or _default_store(settings)
    try:
        store = Store(db)
    except StoreError as e:
        raise fail(str(e)) from e
    model_id = store.model_ids[0]
    live = LiveModel(store, model_id, device or settings.runtime.device, dtype or settings.runtime.dtype)
    try:
        lm, saes = live.load()
    except LiveUnavailable as e:
        raise fail(str(e)) from e
    harvested = settings_of(store.meta)
    served = ServedModel(
        model_id,
        lm.model,
        lm.require_tokenizer(),
        saes,
        live.lock,
        live.skip_first,
        live.sink_norm_ratio,
        store.label,
        store.decode,
        corpus_dir_of(store.model_source, harvested.get("corpus")),
    )
    return served, live


def _default_store(settings) -> Path:
    """The store harvested from the demo's model in QSCOPE_DATA_DIR (as `qscope demo` makes it)."""
    from qscope.store.meta import is_current, model_source, read_meta

    demo_model = (settings.paths.demo_dir / "model").resolve()
    for path in sorted(settings.paths.data_dir.glob("*.duckdb")):
        meta = read_meta(path) if is_current(path) else None
        source = model_source(meta) if meta else None
        if source and Path(source).resolve() == demo_model:
            return path
    raise fail(
        f"no feature store of the demo model in {settings.paths.data_dir}: run `qscope demo` (or harvest one) "
        "first, or pass --db"
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


def examples_in(
    pos: list[Path] | None,
    neg: list[Path] | None,
    data: Path | None,
    demo: str | None,
    demo_n: int,
    label_column: str,
    text_column: str,
    positive: str | None = None,
):
    """The examples a command was given (files of each set, one labelled file, or a demo set) as the API takes
    them (qscope.discover.requests.ExamplesIn): `qscope discover`, `qscope fix`."""
    from qscope.discover.requests import ExamplesIn, FileIn

    return ExamplesIn(
        a=read_side(pos, text_column),
        b=read_side(neg, text_column),
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


def limits(max_examples: int | None):
    from qscope.discover.examples import ExampleLimits

    settings = get_settings()
    return ExampleLimits(
        max_examples=max_examples or 20 * settings.discover.max_examples,
        max_chars=settings.live.max_chars,
        max_file_bytes=1 << 62,
    )


def cli_runner(served, settings, sae_ids=None):
    from qscope.discover.service import runner_for

    return runner_for(served, settings.discover.batch_tokens, sae_ids)


def write_json(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"
