"""The typer application every command module registers on, and the stderr console the commands write to."""

from __future__ import annotations

import typer
from rich.console import Console

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="qscope: explore the inside of Qwen models.")
console = Console(stderr=True)


def say(text: str, style: str = "") -> None:
    """One message on stderr, never wrapped or marked up (file names and errors stay on one line)."""
    console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)
