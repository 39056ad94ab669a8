"""`qscope bench fix` on the tiny default, small: every phase timed, the baselines' cost beside the features' part,
a JSON line last that agrees with the lines above it."""

import json

import pytest
from typer.testing import CliRunner

from qscope.cli import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_fix_times_each_phase_and_the_baselines(tiny_db):
    args = ["bench", "fix", "--db", str(tiny_db), "--n", "12", "--per-sae", "1", "--max-prompts", "3", "--seeds", "1"]
    args += ["--random-controls", "1", "--max-new-tokens", "4", "--strengths", "0,2", "--threads", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    s = out["seconds"]
    for phase in ("discover", "discover: forward + encode", "discover: baselines (DiffMean, probe)", "evaluate"):
        assert s[phase] >= 0
    assert s["total"] >= s["discover"] + s["evaluate"] - 0.01
    assert out["baselines_s"] == pytest.approx(s["discover: baselines (DiffMean, probe)"], abs=1e-3)
    assert 0 < out["baselines_share_of_discovery"] < 1
    # 1 + 2 sweep points + at strength 2: negated, 1 random set, 1 candidate, DiffMean: 7 points x 3 prompts
    assert (out["rows"], out["diffmean_rows"], out["prompts"]) == (21, 3, 3)
    assert sorted(out["ranked"]) == ["candidate-1", "diffmean", "intervention"]
    assert f"baselines {out['baselines_s']:.2f} s" in result.output
