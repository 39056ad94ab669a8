"""The typer application every command module registers on, and the stderr console the commands write to."""

from __future__ import annotations

import typer
from rich.console import Console


class _Command(typer.core.TyperCommand):
    """Typer's rich help labels every flag '<bool>', as if `--tiny` took a value: flags show no type here."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class _Group(typer.core.TyperGroup, _Command):
    pass


class QTyper(typer.Typer):
    """typer.Typer whose commands use _Command (flags without a type label in --help)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


cli = QTyper(add_completion=False, no_args_is_help=True, help="qscope: explore the inside of Qwen models.")
console = Console(stderr=True)
DEMO_MODEL_ID = "mini-Qwen"  # the embedded default's name in URLs and pages (its folder is data/demo/model)


def say(text: str, style: str = "") -> None:
    """One message on stderr, never wrapped or marked up (file names and errors stay on one line)."""
    console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)
