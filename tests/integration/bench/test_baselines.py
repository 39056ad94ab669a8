"""`qscope bench baselines` on the tiny mini-Qwen, small: a demo set and a set of other real text, one table row
per set and hooked site, each method's AUROC a probability, the counts of who wins adding up, a JSON line last."""

import json

import pytest

from qscope.bench import baselines

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_baselines_prints_a_row_per_set_and_site(tiny_demo, capsys):
    baselines.main(["--demo-dir", str(tiny_demo), "--sets", "code-vs-prose,licenses-vs-descriptions", "--n", "20"])
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    rows = report["rows"]
    assert [(r["set"], r["site"]) for r in rows] == [
        (s, f"model.layers.{n}") for s in ("code-vs-prose", "licenses-vs-descriptions") for n in (0, 1)
    ]
    for r in rows:
        assert r["a"] == r["b"] == 20 and r["test"] == 12
        assert all(0.0 <= r[m] <= 1.0 for m in baselines.COLUMNS)
        lo, hi = r["interval"]
        assert lo <= r["difference"] <= hi and r["sentence"]
    assert report["features_better"] + report["baselines_better"] <= len(rows)
    table = [line for line in out if line.startswith("| ") and "model.layers." in line]
    assert len(table) == len(rows) and all(r["sentence"] in line for r, line in zip(rows, table, strict=True))
