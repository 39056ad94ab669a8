"""The `qscope` command (typer): one subcommand per job; defaults come from Settings.

app.py holds the typer application and the console; each other module registers its commands on it:
demo.py (build-demo, demo, info), harvest.py (harvest, harvest-release), serve.py (serve, health), explain.py
(explain, explain-export), discover.py (discover, footprint), steer_eval.py (steer-eval), bench.py (bench NAME).
"""

from __future__ import annotations

from qscope.cli.app import cli

# each module registers its commands on `cli`; `qscope --help` lists them in this order
# isort: off
from qscope.cli import demo, harvest, serve, explain, discover, steer_eval, bench  # noqa: F401
# isort: on

__all__ = ["cli", "main"]


def main() -> None:
    cli()
