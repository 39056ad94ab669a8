"""The sharded harvest against the single-process one on the tiny mini-Qwen: task planning, the exact merge of
random shard splits (property test), the same database from tasks run in this process and on a real local Ray
cluster (with a worker killed mid-job), failed tasks kept for a rerun, and release manifests."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from qscope.cli import cli
from qscope.harvest.cluster import ClusterPlan, TasksFailed, harvest_cluster
from qscope.harvest.feed import feed_sae, state_spec
from qscope.harvest.ids import model_id_for
from qscope.harvest.manifest import ManifestError, load_manifest
from qscope.harvest.options import HarvestOptions
from qscope.harvest.pools import InlinePool
from qscope.harvest.run import chunks_of, harvest, prepare
from qscope.harvest.shards import group_saes, merge_states, plan_tasks
from qscope.harvest.state import FeatureState
from qscope.model import capture
from tests.helpers import ROOT
from tests.helpers.harvests import demo_options

CTX, BATCH = 64, 8
VOLATILE_META = {"created_at", "seconds", "release"}
SPLIT = ClusterPlan(shard_tokens=3 * BATCH * CTX, saes_per_task=1)  # 3 batches a shard, 1 SAE a group

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def options(demo: Path, out: Path) -> HarvestOptions:
    """59 windows of the validation split: 8 batches, the last one short."""
    return demo_options(demo, out, tokens=4096, ctx=CTX, batch=BATCH, top_k=8, before=8, after=4)


@pytest.fixture(scope="module")
def single_db(tiny_demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "single.duckdb"
    harvest(options(tiny_demo, out), Console(quiet=True))
    return out


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows in a fixed order (meta without its volatile keys)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in names}
        cols = [r[0] for r in con.execute("DESCRIBE features").fetchall()]
    finally:
        con.close()
    out["meta"] = [r for r in out["meta"] if r[0] not in VOLATILE_META]
    mean = cols.index("mean_act")  # a sum of floats: equal up to the order of the additions
    out["mean_act"] = [r[mean] for r in out["features"]]
    out["features"] = [r[:mean] + r[mean + 1 :] for r in out["features"]]
    return out


def assert_same_store(got: Path, want: Path) -> None:
    a, b = dump(got), dump(want)
    assert a.keys() == b.keys()
    for table in a.keys() - {"mean_act"}:
        assert a[table] == b[table], table
    np.testing.assert_allclose(a["mean_act"], b["mean_act"], rtol=1e-12, atol=0)
    assert len(a["contexts"]) > 1000


def test_plan_cuts_whole_batches_and_groups_saes_by_memory():
    tasks = plan_tasks(n_windows=59, batch=8, batches_per_task=3, groups=[(0, 1), (2,)])
    assert [(t.b0, t.b1, t.saes) for t in tasks] == [
        (0, 3, (0, 1)),
        (3, 6, (0, 1)),
        (6, 8, (0, 1)),
        (0, 3, (2,)),
        (3, 6, (2,)),
        (6, 8, (2,)),
    ]
    assert [t.index for t in tasks] == list(range(6))
    assert tasks[2].windows(8, 59) == (48, 59)
    assert group_saes([4, 4, 4, 9, 1], budget=8) == [(0, 1), (2,), (3,), (4,)]  # an SAE alone may exceed it
    assert group_saes([1, 1, 1, 1, 1], budget=100, max_per_group=2) == [(0, 1), (2, 3), (4,)]
    assert [len(g) for g in group_saes([1] * 28, budget=27)] == [14, 14]  # as few as greedy, as even as fits


@given(sizes=st.lists(st.integers(0, 10), min_size=1, max_size=16), budget=st.integers(0, 40), cap=st.integers(0, 5))
def test_groups_cover_every_sae_in_order_within_the_budget(sizes, budget, cap):
    groups = group_saes(sizes, budget, cap)
    assert [i for g in groups for i in g] == list(range(len(sizes)))
    assert all(g and (len(g) == 1 or sum(sizes[i] for i in g) <= budget) for g in groups)
    assert cap == 0 or all(len(g) <= cap for g in groups)


@pytest.fixture(scope="module")
def batches(tiny_demo, tmp_path_factory):
    """The single-process harvest's inputs and every batch's hidden states at every SAE site."""
    opts = options(tiny_demo, tmp_path_factory.mktemp("prop") / "x.duckdb")
    job = prepare(opts)
    hidden = [
        capture(job.loaded.model, [s.site for s in job.saes], job.windows_NT[w0 : w0 + BATCH].long())
        for w0 in range(0, len(job.windows_NT), BATCH)
    ]
    whole = [FeatureState(state_spec(opts, s.d_sae)) for s in job.saes]
    for b, h in enumerate(hidden):  # the single-process pass: every batch in order into one state per SAE
        for i, sae in enumerate(job.saes):
            feed_sae(whole[i], sae, h[sae.site], b, i, chunks_of(opts, job)[i], opts, {})
    return opts, job, hidden, whole


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_merge_of_random_shard_splits_equals_the_single_pass(batches, data):
    """Any split of the batches into shards, any grouping of SAEs into tasks, any merge order: the state of
    the single pass. Top-k, interval reservoirs, histograms, counts and maxima are equal bit for bit."""
    opts, job, hidden, whole = batches
    n_shards = data.draw(st.integers(1, len(hidden)), label="shards")
    shard_of = data.draw(st.lists(st.integers(0, n_shards - 1), min_size=len(hidden), max_size=len(hidden)))
    one_group = data.draw(st.booleans(), label="all SAEs in one task")
    groups = [tuple(range(len(job.saes)))] if one_group else [(i,) for i in range(len(job.saes))]
    parts: dict[int, list[dict]] = {i: [] for i in range(len(job.saes))}
    for shard in range(n_shards):
        for group in groups:
            states = {i: FeatureState(state_spec(opts, job.saes[i].d_sae)) for i in group}
            for b in [b for b, s in enumerate(shard_of) if s == shard]:
                for i in group:
                    sae = job.saes[i]
                    feed_sae(states[i], sae, hidden[b][sae.site], b, i, chunks_of(opts, job)[i], opts, {})
            for i in group:
                parts[i].append(states[i].state_dict())
    for i, sae in enumerate(job.saes):
        order = data.draw(st.permutations(range(n_shards)), label=f"merge order of SAE {i}")
        merged = merge_states(state_spec(opts, sae.d_sae), [parts[i][k] for k in order])
        got, want = merged.state_dict(), whole[i].state_dict()
        assert got.keys() == want.keys()
        for key in want:
            if key == "sum":
                torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=0)
            else:
                assert torch.equal(got[key], want[key]), key
        assert want["n_tokens"] > 0 and (want["interval.keys"] != torch.iinfo(torch.int64).max).any()


class FlakyPool(InlinePool):
    """Tasks in this process; the tasks listed in `fail` raise, every task run is counted."""

    def __init__(self, fail=()):
        self.fail, self.ran = set(fail), []

    def run(self, work, tasks, windows):
        for task, outcome in super().run(work, tasks, windows):
            self.ran.append(task.index)
            yield task, RuntimeError("worker lost") if task.index in self.fail else outcome


def test_tasks_in_this_process_give_the_single_process_database(tiny_demo, single_db, tmp_path):
    out = tmp_path / "inline.duckdb"
    summary = harvest_cluster(options(tiny_demo, out), InlinePool(), Console(quiet=True), SPLIT)
    assert_same_store(out, single_db)
    assert summary.tokens == 59 * CTX and not (tmp_path / "inline.duckdb.spool").exists()


def test_failed_tasks_are_reported_and_a_rerun_does_only_the_rest(tiny_demo, single_db, tmp_path):
    out = tmp_path / "flaky.duckdb"
    flaky = FlakyPool(fail={1, 4})
    with pytest.raises(TasksFailed, match="2 of 6 tasks failed .*worker lost.* 4 finished ones are kept"):
        harvest_cluster(options(tiny_demo, out), flaky, Console(quiet=True), SPLIT)
    assert not out.exists() and len(list((tmp_path / "flaky.duckdb.spool").glob("*/task-*.pt"))) == 4
    again = FlakyPool()
    harvest_cluster(options(tiny_demo, out), again, Console(quiet=True), SPLIT)
    assert sorted(again.ran) == [1, 4]
    assert_same_store(out, single_db)


def write_manifest(tmp_path: Path, demo: Path, per: str, extra: str = "") -> Path:
    path = tmp_path / "release.toml"
    path.write_text(f"""
out_dir = "stores"
per = "{per}"
corpus = "{demo / "corpus" / "val.jsonl"}"

[options]
tokens = 4096
ctx = {CTX}
batch = {BATCH}
top_k = 8
before = 8
after = 4
device = "cpu"
dtype = "float32"

[[models]]
model = "{demo / "model"}"
saes = ["{demo / "saes"}"]
{extra}
""")
    return path


def test_release_manifest_writes_one_store_per_sae_and_skips_what_is_done(tiny_demo, single_db, tmp_path):
    manifest = write_manifest(tmp_path, tiny_demo, "sae", 'layers = "0-1"')
    result = CliRunner().invoke(cli, ["harvest-release", str(manifest), "--shard-tokens", "1536"])
    assert result.exit_code == 0, result.output
    stores = sorted((tmp_path / "stores" / model_id_for(tiny_demo / "model")).glob("*.duckdb"))
    assert [p.name for p in stores] == [f"SAE-Res-mini-qwen-W512-L0_16__layer{n}.duckdb" for n in (0, 1)]
    whole = dump(single_db)
    for store in stores:
        part = dump(store)
        sae_id = store.stem
        for table in part.keys() - {"meta", "vocab", "mean_act"}:  # every table: rows of this SAE only
            assert part[table] == [r for r in whole[table] if r[0] == sae_id], table
        assert json.loads(dict(part["meta"])["settings"])["tokens"] == 4096
    again = CliRunner().invoke(cli, ["harvest-release", str(manifest)])
    assert again.exit_code == 0 and "done, skipped (2 store(s)" in again.output, again.output


def test_manifest_mistakes_are_one_line_errors(tiny_demo, tmp_path):
    with pytest.raises(ManifestError, match="unknown key 'tokns'"):
        load_manifest(write_manifest(tmp_path, tiny_demo, "model", "tokns = 5"))
    with pytest.raises(ManifestError, match="layers must be like"):
        load_manifest(write_manifest(tmp_path, tiny_demo, "model", 'layers = "all"'))
    with pytest.raises(ManifestError, match='per must be "model" or "sae"'):
        load_manifest(write_manifest(tmp_path, tiny_demo, "layer"))
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [")
    result = CliRunner().invoke(cli, ["harvest-release", str(bad)])
    assert result.exit_code == 2 and "cannot read the manifest" in result.output
    release = load_manifest(ROOT / "docs" / "qwen-scope-release.toml")
    assert len(release) == 7 and sum(len(j.repos) for j in release) == 14
    assert sum(2 * len(j.layers) for j in release) == 544  # every layer, two sparsities: docs/harvest-at-scale.md
    jobs = load_manifest(write_manifest(tmp_path, tiny_demo, "model"))
    name = model_id_for(tiny_demo / "model")
    assert [j.name for j in jobs] == [name] and jobs[0].opts.out == tmp_path / "stores" / f"{name}.duckdb"


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_single_process_database(tiny_demo, single_db, tmp_path):
    """Two worker processes on this machine; the first attempt of task 2 kills its worker, Ray retries it."""
    ray = pytest.importorskip("ray")
    from qscope.harvest.pools import RayPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out = tmp_path / "ray.duckdb"
        plan = ClusterPlan(shard_tokens=SPLIT.shard_tokens, saes_per_task=1, crash_once=(str(tmp_path), 2))
        harvest_cluster(options(tiny_demo, out), RayPool(None, cpus_per_task=1, threads=1), Console(quiet=True), plan)
    finally:
        ray.shutdown()
    assert (tmp_path / "crashed-2").exists()  # the worker did die once
    assert_same_store(out, single_db)
