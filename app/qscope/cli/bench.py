"""`qscope bench NAME`: each benchmark is the module qscope.bench.NAME (its own argparse options, `--help` lists
them); it prints its figures and a JSON line last. Registered from one table."""

from __future__ import annotations

import importlib
import sys

import typer

from qscope.cli.app import QTyper, cli

BENCHMARKS = {  # command name -> (module in qscope.bench, one line for `qscope bench --help`)
    "serve": ("serve", "Load-test `qscope serve` on a synthetic store at scale"),
    "harvest": ("harvest", "Harvest vs forward + SAE encode alone on the same tokens"),
    "real-shape": ("real_shape", "The harvest at Qwen3-1.7B's shapes, every phase timed and projected"),
    "steer": ("steer", "Default + steered in one batch vs plain, hook overhead, 8 requests vs 1"),
    "attribute": ("attribute", "One attribution of a 128-token prompt vs one forward pass of it"),
    "load": ("load", "Browsing and steering mixed at several times the steering capacity"),
    "explain": ("explain", "Features explained per minute via qscope serve's /v1, many in flight vs one"),
    "discover": ("discover", "Discover's examples/s vs forward + SAE encode alone on the same tokens"),
    "baselines": ("baselines", "Features vs DiffMean and a probe at detection, on the demo sets and other real text"),
    "fix": ("fix", "The fix flow's wall time per phase; the baselines' cost beside the features' part"),
    "steer-eval": ("steer_eval", "A batched evaluation sweep vs the same rows one request at a time, one server"),
    "serve-mix": ("serve_mix", "A mixed steering workload on the continuous worker beside the static one"),
}

bench_cli = QTyper(no_args_is_help=True, help="Benchmarks: each prints its figures, a JSON line last.")
cli.add_typer(bench_cli, name="bench")
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _command(name: str, module: str):
    def run(ctx: typer.Context) -> None:
        sys.argv[0] = f"qscope bench {name}"  # argparse names the program (its usage line) after argv[0]
        importlib.import_module(f"qscope.bench.{module}").main(list(ctx.args))

    return run


for _name, (_module, _doc) in BENCHMARKS.items():
    bench_cli.command(
        _name, context_settings=_PASS_THROUGH, help=f"{_doc} (`qscope bench {_name} --help` for its options)."
    )(_command(_name, _module))
