"""The demo's first run as a newcomer meets it: where the output is a log (CI, docker, `make demo > log`), every
phase of the build says it has started at once and then prints a line every tenth and at least every half minute,
each with the time taken and the time left; `make demo` names the quick path (`make demo-tiny`) in its first
line, and `qscope serve` ends on what to try first, not only the URL."""

import io
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace

from rich.console import Console

from qscope.demo.build import LOG_EVERY_S, build_demo, build_progress
from qscope.demo.spec import TINY
from tests.helpers import ROOT


def test_a_log_gets_a_line_at_the_first_step_and_per_tenth_with_the_time_left():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with build_progress(console) as bar:
        bar.add(name := "train mini-Qwen", 100)
        with bar.run(name):
            for step in range(100):
                bar.update(name, done=step + 1, info=f"loss {1 / (step + 1):.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 11, lines
    assert all(re.fullmatch(r"train mini-Qwen: \d+/100 loss [\d.]+ \(\d+s, about \d+s left\)", ln) for ln in lines)
    assert lines[0].startswith("train mini-Qwen: 1/100")  # the first step, before a tenth is done
    assert lines[-1].startswith("train mini-Qwen: 100/100") and lines[-1].endswith("about 0s left)")


def test_a_slow_phase_is_never_silent_for_long():
    """On a busy machine a tenth can take minutes: a line comes at least every LOG_EVERY_S (a clock we move)."""
    now = [0.0]
    out = io.StringIO()
    with build_progress(Console(file=out, force_terminal=False, width=200), clock=lambda: now[0]) as bar:
        bar.add(name := "train SAE layer 1", 800)
        said_at = []
        with bar.run(name):
            for step in range(800):
                now[0] += 7.0  # seven seconds a step: a tenth takes over nine minutes
                before = out.getvalue().count("\n")
                bar.update(name, done=step + 1, info="fvu 0.1")
                if out.getvalue().count("\n") > before:
                    said_at.append(now[0])
    assert said_at[0] == 7.0  # the first step's line, at once
    gaps = [b - a for a, b in zip(said_at, said_at[1:], strict=False)]
    assert max(gaps) <= LOG_EVERY_S + 7.0 and len(said_at) > 800 * 7 / (LOG_EVERY_S + 7)
    assert "(7s, about 5593s left)" in out.getvalue().splitlines()[0]


class _Stamped(io.StringIO):
    """A log file that notes when each line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def write(self, s: str) -> int:
        for line in s.splitlines():
            if line.strip():
                self.stamps.append((time.monotonic(), line))
        return super().write(s)


def test_every_phase_of_a_tiny_build_says_it_started_within_a_minute(tmp_path):
    """A tiny build (fewer steps, so the test is short) into an empty folder: each phase's first line comes
    before its work, and no two lines of the log are a minute apart."""
    spec = replace(TINY, steps=6, warmup_steps=2, sae_train_tokens=4096, sae_eval_tokens=1024)
    log = _Stamped()
    t0 = time.monotonic()
    build_demo(tmp_path / "demo", spec, Console(file=log, force_terminal=False, width=300))
    lines = [line for _, line in log.stamps]
    firsts = [
        "corpus: gathering",
        "tokenizer: training",
        "train mini-Qwen: 1/6",
        "SAE activations: running the model",
        *(f"train SAE layer {layer}: 1/" for layer in spec.sae_layers),
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(first)) for first in firsts]
    assert at == sorted(at), lines
    times = [t0] + [t for t, _ in log.stamps]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 60, log.stamps


def test_make_demo_names_the_quick_path_first():
    # as a person runs it, even from inside `make test` (a nested make would print "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    first = demo.stdout.splitlines()[0]
    assert first.startswith("echo ") and "make demo-tiny" in first and "about a minute" in first
    tiny = subprocess.run(["make", "-n", "demo-tiny"], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    assert tiny.stdout.splitlines()[-1].endswith("qscope demo --tiny")
    readme = (ROOT / "README.md").read_text()
    assert "make demo-tiny" in readme[: readme.index("\n\n", readme.index("```bash"))]


def test_serve_ends_on_what_to_try_first(tiny_db, tmp_path):
    """The last line a start prints (search ready) is followed by where to go and what to try there."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"QSCOPE_DEVICE": "cpu", "QSCOPE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-c", "from qscope.cli import main; main()", "serve", "--db", str(tiny_db)]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stderr=subprocess.STDOUT, stdout=subprocess.PIPE, env=env)
    watchdog = threading.Timer(180, proc.terminate)  # a server that never says search is ready fails, not hangs
    watchdog.start()
    lines: list[str] = []
    try:
        for raw in proc.stdout:
            lines.append(raw.decode().rstrip())
            if lines[-1].startswith("search ready"):
                time.sleep(2)  # whatever it prints next, then stop it
                break
        proc.terminate()
        lines += proc.stdout.read().decode().splitlines()  # the rest (the pipe's buffer included), to its end
    finally:
        watchdog.cancel()
        proc.kill()
    ready = next(i for i, line in enumerate(lines) if line.startswith("search ready"))
    assert lines[ready + 1 :] and lines[-1].startswith(f"open http://127.0.0.1:{port}/ and try first"), lines
    assert "a search, a feature page, /steer" in lines[-1]
