"""The `qscope` command (typer). Each issue adds its subcommand here; defaults come from Settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.config import get_settings

cli = typer.Typer(
    add_completion=False, no_args_is_help=True, help="qscope: explore the inside of Qwen models."
)
console = Console(stderr=True)


def _spec(tiny: bool):
    from dataclasses import replace

    from app.demo.spec import FULL, TINY

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
    tiny: Annotated[
        bool, typer.Option("--tiny", help="A micro version in under a minute, for tests.")
    ] = False,
) -> None:
    """Build mini-Qwen offline: corpus, tokenizer, Qwen3 model and TopK SAEs (Qwen-Scope format)."""
    from app.demo.build import build_demo

    out = out or get_settings().demo_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = build_demo(out, _spec(tiny), console)
    console.print(_figures(report))
    console.print(f"built {out} (figures in {out / 'build.json'})")


@cli.command("demo")
def demo_cmd(
    out: Annotated[Path | None, typer.Option(help="Demo folder (default: Settings.demo_dir).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Use the micro build.")] = False,
) -> None:
    """Build the embedded default if missing, harvest it, and serve it."""
    build_demo_cmd(out=out, tiny=tiny)
    console.print(
        "[yellow]not there yet:[/] `qscope harvest` and `qscope serve` come with the harvest and web issues; "
        "the default model and SAEs are built and ready for them."
    )


@cli.command("info")
def info_cmd(
    sae: Annotated[list[Path], typer.Argument(help="SAE files or folders to describe.")],
) -> None:
    """Describe SAE files: format, architecture, layer, d_in, d_sae, k."""
    from app.sae import SaeFormatError, find_sae_files, load_sae

    rows = []
    for root in sae:
        paths = find_sae_files(root) if root.is_dir() else [root]
        for path in paths or [root]:
            try:
                s = load_sae(path)
            except SaeFormatError as err:
                console.print(f"[red]error:[/] {err}")
                raise typer.Exit(2) from err
            rows.append({"path": str(path), "format": s.format, "architecture": s.architecture, "layer": s.layer,
                         "site": s.site, "d_in": s.d_in, "d_sae": s.d_sae, "k": s.k})  # fmt: skip
    typer.echo(json.dumps(rows, indent=2))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
