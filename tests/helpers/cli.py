"""The `qscope` command run in process (typer's CliRunner) and the JSON line it prints last."""

import json

from typer.testing import CliRunner

from qscope.cli import cli


def run(*args: str):
    """(the result, everything it printed)."""
    result = CliRunner().invoke(cli, list(args))
    return result, result.output


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])
