"""`qscope discover` and `qscope footprint` without a server, on the tiny default: results on stdout (JSON line
last), files written whole, detectors saved to the app database, and bad input as one line with exit code 2."""

import re

import pytest

from qscope.config import get_settings
from qscope.discover import footprint_files
from qscope.discover.detector_runs import SavedDetector
from qscope.discover.discovery import Discovery
from qscope.discover.footprints import compare
from qscope.discover.store import DiscoverStore
from tests.helpers.cli import last_json, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_discover_demo_saves_a_detector(tiny_db, tmp_path, app_db):
    out = tmp_path / "result.json"
    result, text = run(
        "discover",
        "--db",
        str(tiny_db),
        "--demo",
        "code-vs-prose",
        "--detector",
        "top2-any",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    )
    assert result.exit_code == 0, text
    assert "above the 95th percentile" in " ".join(text.split())  # the numbers' reading
    rows = [line for line in text.splitlines() if re.match(r"\W*\d+\W+layer[01]\W+\d+", line)]
    assert len(rows) >= 2, text  # each row names its layer whole (a cut sae_id showed two layers alike)
    summary = last_json(text)
    assert summary["top_test_auroc"] >= 0.9 and summary["top_test_auroc"] > summary["baseline_p95"]
    assert summary["examples"] == 200 and summary["test"] == 60
    found = Discovery.model_validate_json(out.read_text())
    assert found.id == summary["discovery"] and found.ranking.a_side[0].test_auroc == summary["top_test_auroc"]
    store = DiscoverStore(app_db)
    saved = SavedDetector.model_validate_json(store.get("detector", summary["detector"]))
    store.close()
    assert len(saved.detector.terms) == 2 and saved.test.f1 == summary["detector_test_f1"]
    assert "random features" in text and "label-shuffle control" in text and "L1 logistic regression" in text


def test_discover_saves_a_baseline_as_a_detector(tiny_db, tmp_path, app_db):
    """Issue 26: `--detector diffmean:SITE` saves DiffMean on that site's residual, scored as the baselines did."""
    out = tmp_path / "result.json"
    args = ["discover", "--db", str(tiny_db), "--demo", "code-vs-prose", "--demo-n", "60", "--out", str(out)]
    result, text = run(*args, "--detector", "diffmean:model.layers.1", "--device", "cpu", "--dtype", "float32")
    assert result.exit_code == 0, text
    summary = last_json(text)
    store = DiscoverStore(app_db)
    saved = SavedDetector.model_validate_json(store.get("detector", summary["detector"]))
    store.close()
    assert saved.detector.kind == "diffmean" and saved.detector.site == "model.layers.1" and "DiffMean on" in saved.name
    site = next(
        b
        for b in Discovery.model_validate_json(out.read_text()).baselines or []
        if b.comparison.site == "model.layers.1"
    )
    judged = next(m for m in site.comparison.methods if m.method == "DiffMean")
    assert saved.test.auroc == pytest.approx(judged.test_auroc, abs=1e-6)
    bad, said = run(*args, "--detector", "probe:model.layers.9", "--device", "cpu")
    assert bad.exit_code == 2 and "not hooked here" in said and "Traceback" not in said


def test_discover_from_files(tiny_db, tmp_path, app_db):
    pos, neg = tmp_path / "code.txt", tmp_path / "prose.csv"
    pos.write_text("\n".join(f"value_{i} = table.get(key_{i}, None)" for i in range(12)) + "\n")
    neg.write_text(
        "text,source\n"
        + "".join(
            f"The river ran past the old mill number {w}.,x\n"
            for w in "one two three four five six seven eight".split()
        )
    )
    result, text = run(
        "discover",
        "--pos",
        str(pos),
        "--neg",
        str(neg),
        "--db",
        str(tiny_db),
        "--no-logreg",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, text
    summary = last_json(text)
    assert summary["examples"] == 20 and "logreg_test_f1" not in summary and "discovery" not in summary


def test_no_store_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("QSCOPE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result, text = run("discover", "--demo", "code-vs-prose")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and "no feature store of the demo model" in text and "qscope demo" in text


@pytest.mark.parametrize(
    ("files", "extra", "says"),
    [
        ({"d.csv": "text,kind\nhello,1\n"}, ["--data", "@d.csv"], "no label column 'label'"),
        ({}, ["--pos", "@missing.txt", "--neg", "@missing.txt"], "no such file"),
        (
            {"a.txt": "x = 1\ny = 2\nz = 3\nw = 4\n", "b.txt": "\n\n"},
            ["--pos", "@a.txt", "--neg", "@b.txt"],
            "only one class",
        ),
        ({}, [], "give the examples"),
        ({}, ["--demo", "code-vs-prose", "--detector", "top9"], "--detector 'top9'"),
    ],
)
def test_discover_bad_input_is_one_line(tiny_db, tmp_path, files, extra, says, app_db):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    args = [str(tmp_path / a[1:]) if a.startswith("@") else a for a in extra]
    result, text = run("discover", "--db", str(tiny_db), *args)
    assert result.exit_code == 2, text
    assert says in text and "Traceback" not in text
    assert [line for line in text.splitlines() if line.startswith("error:")] == [text.strip().splitlines()[-1]]


@pytest.mark.parametrize("suffix", [".parquet", ".duckdb"])
def test_footprint_writes_a_file_the_same_as_its_figures(tiny_db, tmp_path, suffix, app_db):
    out = tmp_path / f"fp{suffix}"
    result, text = run(
        "footprint", "--demo", "code-vs-prose", "--demo-n", "60", "--db", str(tiny_db), "--out", str(out), "--save"
    )
    assert result.exit_code == 0, text
    summary = last_json(text)
    f = footprint_files.read(out)
    again = compare(f.a, f.b, f.by, f.share)
    assert again.overlap == pytest.approx(summary["overlap"]) and again.shared == summary["shared"]
    assert 0 < summary["overlap"] < 1 and f.meta["model_id"] == summary["model_id"]
    assert any(label for label in f.labels.values())
    assert summary["footprint_url"].startswith("/footprints/")


def test_footprint_of_a_file_with_itself_and_refusals(tiny_db, tmp_path, app_db):
    data = tmp_path / "lines.txt"
    data.write_text("\n".join(f"for item_{i} in range({i}):" for i in range(15)))
    result, text = run("footprint", str(data), "--b", str(data), "--db", str(tiny_db), "--by", "mass", "--share", "0.5")
    assert result.exit_code == 0, text
    assert last_json(text)["overlap"] == 1.0
    result, text = run("footprint", str(data), "--db", str(tiny_db), "--out", str(tmp_path / "x.csv"))
    assert result.exit_code == 2 and "give a .parquet or .duckdb" in text
    result, text = run("footprint", str(data), "--db", str(tiny_db), "--by", "tokens")
    assert result.exit_code == 2 and "--by 'tokens'" in text
