"""The demo build's progress where the output is a log (CI, docker, `make demo > log`): a plain line every tenth
of a stage, each with the time taken and the time left."""

import io
import re

from rich.console import Console

from qscope.demo.build import _Progress


def test_a_log_gets_a_line_per_tenth_with_the_time_left():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with _Progress(console) as bar:
        task = bar.add_task("train mini-Qwen", total=100, info="")
        for step in range(100):
            bar.update(task, completed=step + 1, info=f"loss {1 / (step + 1):.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert all(re.fullmatch(r"train mini-Qwen: \d+/100 loss [\d.]+ \(\d+s, about \d+s left\)", ln) for ln in lines)
    assert lines[-1].startswith("train mini-Qwen: 100/100") and lines[-1].endswith("about 0s left)")
