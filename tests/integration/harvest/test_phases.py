"""Every phase of a harvest shows its progress and its time, in a log (plain lines with rate and time left) and
in a terminal (bars), for the single-process and the sharded harvest; the harvest builds the search index,
which the server then answers from at once, while a store without one is served and says so."""

import io
import shutil

import pytest
from rich.console import Console

from qscope.config import Settings
from qscope.harvest.build import PHASES, format_phases
from qscope.harvest.cluster import ClusterPlan, harvest_cluster
from qscope.harvest.options import HarvestOptions
from qscope.harvest.pools import InlinePool
from qscope.harvest.run import format_summary, harvest
from qscope.progress import PhaseProgress
from qscope.search.semantic import has_cached_index, index_paths, index_store
from qscope.web import create_app
from tests.helpers.harvests import demo_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out  # a file, not a terminal: plain lines


def test_plain_lines_say_progress_rate_time_left_and_done():
    console, out = log_console()
    with PhaseProgress(console, every_s=0) as phases:
        phases.add("logit effects", 1000, "features")
        with phases.run("logit effects") as advance:
            advance(250)
            advance(750)
    lines = out.getvalue().splitlines()
    assert lines[0] == "logit effects: 0/1,000 features (0%)"
    assert lines[1].startswith("logit effects: 250/1,000 features (25%), ") and "features/s, ~0:00:" in lines[1]
    assert lines[-1].startswith("logit effects: done, 1,000 features in ") and phases.seconds["logit effects"] > 0


def test_a_terminal_gets_bars():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with PhaseProgress(console) as phases:
        phases.add("pass", 4096, "tokens")
        with phases.run("pass") as advance:
            advance(4096)
    assert "pass" in out.getvalue() and "4,096/4,096 tokens" in out.getvalue() and "━" in out.getvalue()
    assert format_phases({"write": 1.0, "pass": 2.0}) == "pass 2.0 s, write 1.0 s"


def options(demo, out, **kw) -> HarvestOptions:
    return demo_options(demo, out, tokens=1024, ctx=64, batch=8, **kw)


def assert_every_phase(text: str, timings: dict) -> None:
    for name in PHASES:
        assert f"\n{name}: done, " in "\n" + text, (name, text)
        assert timings[name] >= 0, name


def test_single_process_harvest_shows_every_phase_in_a_log_and_builds_the_index(tiny_demo, tmp_path):
    console, out = log_console()
    summary = harvest(options(tiny_demo, tmp_path / "a.duckdb"), console, indexer=index_store)
    assert_every_phase(out.getvalue(), summary.timings)
    text = format_summary(summary)
    assert "time per phase: pass " in text and ", index " in text and summary.indexed > 0
    assert has_cached_index(tmp_path / "a.duckdb")
    npy, stamp = index_paths(tmp_path / "a.duckdb", None)
    assert npy.is_file() and stamp.is_file() and not list(tmp_path.glob("*.tmp*"))


def test_sharded_harvest_shows_every_phase_too(tiny_demo, tmp_path):
    console, out = log_console()
    plan = ClusterPlan(shard_tokens=8 * 64 * 4, saes_per_task=1)
    summary = harvest_cluster(options(tiny_demo, tmp_path / "b.duckdb"), InlinePool(), console, plan, None, index_store)
    assert_every_phase(out.getvalue(), summary.timings)
    assert has_cached_index(tmp_path / "b.duckdb") and summary.indexed > 0


def test_the_server_answers_semantic_search_at_once_from_the_harvest_built_index(tiny_db, tmp_path):
    """tiny_db is harvested with its index (as `qscope harvest` does): the first search finds features by
    meaning without waiting for a build. A copy without the index is served too: text search answers, and the
    notes say that its semantic index is being built."""
    settings = Settings(device="cpu", cache_dir=tmp_path / "cache")
    app = create_app([tiny_db], settings, warm_search=False)
    searcher = app.state.searcher
    results = searcher.search("return a value", ["semantic"], limit=5)
    assert results.hits and results.notes == [] and not searcher._pending  # loaded, not built

    bare = tmp_path / "bare.duckdb"
    shutil.copy(tiny_db, bare)
    assert not has_cached_index(bare)
    other = create_app([bare], settings, warm_search=False).state.searcher
    other.embedder = searcher.embedder  # the model is loaded once per test, as a server loads it once
    results = other.search("the", ["semantic", "text"], limit=5)
    assert results.hits and all(f.kind == "text" for h in results.hits for f in h.found)
    assert any("bare.duckdb has no semantic index yet" in n and "being built" in n for n in results.notes)
    assert other.wait_ready(600)
    assert other.search("the", ["semantic"], limit=5).notes == [] and has_cached_index(bare)
