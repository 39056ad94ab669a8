"""The load test (scripts/bench_load.py through `qscope bench load`), small and bounded: `qscope serve` on the tiny
default in one process, browsing and steering mixed at 4x the steering capacity from this one. Past the queue
the server must shed load with 503 + Retry-After; no other 5xx, no dropped connection, and it answers after."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_mixed_load_sheds_only_with_503_and_keeps_answering(tiny_db):
    exe = Path(sys.executable).parent / "qscope"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from qscope.cli import main; main()"]
    args = [
        "bench",
        "load",
        "--db",
        str(tiny_db),
        "--seconds",
        "6",
        "--probe-s",
        "2",
        "--requests",
        "800",
        "--browse-clients",
        "4",
        "--queue",
        "4",
        "--steer-factor",
        "4",
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out["status"]) <= {"200", "503"}, out["status"]  # 503: the steering queue was full, nothing else
    assert out["errors"] == 0 and out["error_rate"] == 0.0, out
    assert out["shed_503"] > 0 and out["kinds"]["steer"]["requests"] > out["shed_503"], out  # shed some, ran some
    assert out["kinds"]["browse"]["requests"] > 50 and out["answers_after"] is True, out
    assert out["steer_offered_rps"] >= 3.9 * out["steer_capacity_rps"], out
