"""`qscope steer-eval`: the same engine without a server, on the tiny default's store."""

import json

import pytest
from typer.testing import CliRunner

from qscope.cli import cli
from qscope.steer.evaluate.result import EvalResult

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"features": [{"sae_id": SAE, "feature": 40}], "max_new_tokens": 6, "seed": 2}))
    return path


def test_cli_writes_the_result_and_says_the_verdict(tiny_db, spec_file, tmp_path, one_torch_thread):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on the\nOnce upon a time\n\nThe weather is\n")
    out, md = tmp_path / "out" / "result.json", tmp_path / "recipe.md"
    args = [
        "steer-eval",
        str(spec_file),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--db",
        str(tiny_db),
        "--strengths",
        "0,4",
        "--seeds",
        "1",
        "--random-controls",
        "1",
        "--markdown",
        str(md),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    result = EvalResult.model_validate_json(out.read_text())
    assert result.prompts == ["The cat sat on the", "Once upon a time", "The weather is"]
    assert len(result.rows) == 3 * (1 + 2 + 1 + 1) and result.strengths == [0.0, 4.0]
    assert f"verdict: {result.verdict.status}" in r.output and "rows/s" in r.output
    assert md.read_text().startswith("# Recipe: add layer1#40 · 3 prompts")
    assert not list(out.parent.glob(".*tmp*"))  # written through a temporary file, renamed


def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_db, spec_file, tmp_path):
    binary = tmp_path / "prompts.txt"
    binary.write_bytes(b"\x00\x01\xff\xfe binary")
    out = tmp_path / "result.json"
    r = CliRunner().invoke(
        cli, ["steer-eval", str(spec_file), "--prompts", str(binary), "--out", str(out), "--db", str(tiny_db)]
    )
    assert r.exit_code == 2 and "error: the file 'prompts.txt' is not text" in r.output and not out.exists()
    r = CliRunner().invoke(
        cli,
        ["steer-eval", str(spec_file), "--set", "prose", "--out", str(out), "--db", str(tiny_db), "--strengths", "0,x"],
    )
    assert r.exit_code == 2 and "--strengths must be numbers" in r.output


def test_cli_runs_a_diffmean_arm_and_says_how_the_arms_compare(tiny_db, tmp_path, one_torch_thread):
    request = {
        "spec": {"features": [{"sae_id": SAE, "feature": 40}], "max_new_tokens": 6, "seed": 2},
        "prompts": ["The cat sat on the", "Once upon a time"],
        "strengths": [0, 1],
        "seeds": 1,
        "random_controls": 0,
        "diffmean": {
            "with_concept": ["def f(x):\n    return x\n", "import os\nprint(os.getcwd())\n"],
            "without_concept": ["The weather was fine.", "She walked to the station."],
        },
    }
    path, out, md = tmp_path / "req.json", tmp_path / "result.json", tmp_path / "recipe.md"
    path.write_text(json.dumps(request))
    args = ["steer-eval", str(path), "--out", str(out), "--db", str(tiny_db), "--markdown", str(md)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    result = EvalResult.model_validate_json(out.read_text())
    assert result.diffmean is not None and result.comparison is not None
    assert len(result.rows) == 2 * (1 + 2 + 1 + 1)  # prompts x (unsteered, sweep, negated, diffmean)
    flat = " ".join(r.output.split())  # rich wraps long lines
    assert "DiffMean arm: two prompt sets given, 2 with / 2 without" in flat
    assert f"arms compared: {' '.join(result.comparison.sentence.split())}" in flat
    assert "## Arms compared" in md.read_text()
    bad = CliRunner().invoke(
        cli, ["steer-eval", str(path), "--out", str(out), "--db", str(tiny_db), "--diffmean-discovery", "nope-x"]
    )
    assert bad.exit_code == 2 and "diffmean: no discovery 'nope-x'" in bad.output
