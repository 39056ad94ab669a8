"""`qscope build-demo`, `qscope demo` (build, harvest and serve the embedded default) and `qscope info`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from qscope.cli.app import DEMO_MODEL_ID, cli, console, say
from qscope.config import get_settings

FULL_TOKENS, TINY_TOKENS = 300_000, 30_000  # harvested by `qscope demo` (--tiny: a first look in about a minute)


def _spec(tiny: bool):
    from dataclasses import replace

    from qscope.demo.spec import FULL, TINY

    return replace(TINY if tiny else FULL, seed=get_settings().runtime.seed)


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
    out: Annotated[Path | None, typer.Option(help="Output folder (default: QSCOPE_DEMO_DIR).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="A micro version in under a minute, for tests.")] = False,
) -> None:
    """Build mini-Qwen offline: corpus, tokenizer, Qwen3 model and TopK SAEs (Qwen-Scope format)."""
    from qscope.demo.build import build_demo, is_built

    out = out or get_settings().paths.demo_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = _spec(tiny)
    if not is_built(out, spec):
        say(
            f"building mini-Qwen{' (tiny)' if tiny else ''} in {out}: "
            + (
                "about half a minute on a quiet CPU"
                if tiny
                else "about 8 minutes on a quiet laptop CPU, much longer on a busy one (for a first look in about "
                "a minute: `make demo-tiny` or `qscope demo --tiny`)"
            )
            + "; finished stages are kept and reused"
        )
    report = build_demo(out, spec, console)
    console.print(_figures(report))
    console.print(f"built {out} (figures in {out / 'build.json'})")


@cli.command("demo")
def demo_cmd(
    out: Annotated[Path | None, typer.Option(help="Demo folder (default: QSCOPE_DEMO_DIR).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Use the micro build.")] = False,
    tokens: Annotated[
        int | None, typer.Option(help="Tokens to harvest from the demo corpus (default: 300,000; --tiny: 30,000).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: QSCOPE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: QSCOPE_PORT).")] = None,
    more: Annotated[
        list[Path] | None, typer.Option("--db", help="More stores (files or folders) to serve beside the default.")
    ] = None,
) -> None:
    """Build the embedded default if missing, harvest it if its feature store is missing, and serve it."""
    from qscope.cli.harvest import harvest_cmd
    from qscope.cli.serve import serve_cmd
    from qscope.harvest.ids import model_id_for
    from qscope.store.meta import is_current

    settings = get_settings()
    out = out or settings.paths.demo_dir
    build_demo_cmd(out=out, tiny=tiny)
    db = settings.paths.data_dir / f"{model_id_for(str(out / 'model'))}{'-tiny' if tiny else ''}.duckdb"
    built = max(p.stat().st_mtime for p in (out / "saes").rglob("stage.json"))
    if db.is_file() and db.stat().st_mtime > built and is_current(db):
        console.print(f"harvest: reusing {db}")
    else:
        harvest_cmd(
            model=str(out / "model"),
            sae=[out / "saes"],
            corpus=str(out / "corpus" / "train.jsonl"),
            out=db,
            tokens=tokens or (TINY_TOKENS if tiny else FULL_TOKENS),
            model_id=f"{DEMO_MODEL_ID}{'-tiny' if tiny else ''}",
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
