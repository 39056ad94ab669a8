"""`qscope discover` and `qscope footprint`. Their code lives with the discover package
(qscope.discover.cli_discover, qscope.discover.cli_footprint), which imports its heavy parts only when run."""

from __future__ import annotations

from qscope.cli.app import cli
from qscope.discover.cli_discover import discover_cmd
from qscope.discover.cli_footprint import footprint_cmd

cli.command("discover")(discover_cmd)
cli.command("footprint")(footprint_cmd)
