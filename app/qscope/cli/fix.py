"""`qscope fix`. Its code lives with the fix package (qscope.fix.cli_fix), which imports its heavy parts only
when run."""

from __future__ import annotations

from qscope.cli.app import cli
from qscope.fix.cli_fix import fix_cmd

cli.command("fix")(fix_cmd)
