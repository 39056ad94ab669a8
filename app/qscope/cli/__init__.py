"""The `qscope` command (typer): one subcommand per job; defaults come from Settings.

app.py holds the typer application and the console; each other module registers its commands on it:
demo.py (build-demo, demo, info), harvest.py (harvest, harvest-release), serve.py (serve, health), explain.py
(explain, explain-export), discover.py (discover, footprint), fix.py (fix), steer_eval.py (steer-eval), app_db.py
(app-db current|upgrade|export|import), bench.py (bench NAME).
"""

from __future__ import annotations

import os

from qscope.cli.app import cli, console

# each module registers its commands on `cli`; `qscope --help` lists them in this order
# isort: off
from qscope.cli import demo, harvest, serve, explain, discover, fix, steer_eval, app_db, bench  # noqa: F401
# isort: on

__all__ = ["cli", "main"]


def main() -> None:
    if not console.is_terminal:
        # transformers draws its own bars (loading weights, writing shards); in a log each is a line of carriage
        # returns beside the plain progress lines the commands print. Read when transformers is imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    cli()
