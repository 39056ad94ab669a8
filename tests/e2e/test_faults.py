"""Faults, caused for real: a harvest process killed (SIGKILL) after a checkpoint resumes to the same database as
an uninterrupted run; `qscope serve` on a missing, truncated or corrupt store or SAE file exits with one clear
line and no traceback; a failing model run stays inside its request (the steering worker and the live model
keep serving, and a busy model answers 503 after its time limit)."""

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from qscope.config import Settings
from qscope.harvest.checkpoint import checkpoint_dir
from qscope.model import load_model
from qscope.steer.engine import Row
from qscope.steer.worker import SteerJob, SteerWorker
from qscope.store.schema import TABLES
from qscope.web import create_app
from tests.helpers.harvests import demo_harvest_args
from tests.helpers.server import cli_env, qscope_cmd
from tests.helpers.timing import wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOLATILE_META = {"created_at", "seconds"}  # wall-clock facts of one run


def harvest_args(demo: Path, out: Path) -> list[str]:
    return [
        *qscope_cmd(),
        *demo_harvest_args(demo, out, demo / "corpus" / "train.jsonl"),
        "--tokens",
        "12288",
        "--ctx",
        "32",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--checkpoint-every",
        "4",
    ]


def tables(path: Path) -> dict[str, list]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES if t != "meta"}
        out["meta"] = sorted(
            r for r in con.execute("SELECT key, value FROM meta").fetchall() if r[0] not in VOLATILE_META
        )
    finally:
        con.close()
    return out


@pytest.mark.slow
def test_a_harvest_killed_midway_resumes_losslessly(tiny_demo, tmp_path):
    killed, whole = tmp_path / "killed.duckdb", tmp_path / "whole.duckdb"
    state = checkpoint_dir(killed) / "state.pt"
    proc = subprocess.Popen(
        harvest_args(tiny_demo, killed), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: as a power cut or the OOM killer would stop it
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert state.exists() and not killed.exists()  # killed between its first checkpoint and its end
    resumed = subprocess.run(
        [*harvest_args(tiny_demo, killed), "--resume"], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from batch" in resumed.stderr + resumed.stdout
    assert not checkpoint_dir(killed).exists()
    fresh = subprocess.run(harvest_args(tiny_demo, whole), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    a, b = tables(killed), tables(whole)
    assert a["features"] and a["contexts"]
    for name in a:
        assert a[name] == b[name], name


def serve_fails(db: Path, *extra: str) -> str:
    """Run `qscope serve` on `db`; it must exit 2 at once with one line and no traceback. The line."""
    r = subprocess.run(
        [*qscope_cmd(), "serve", "--db", str(db), "--port", "9", *extra],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = (r.stdout + r.stderr).strip()
    assert r.returncode == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error: ") and str(db.name) in text, text
    return text


def test_missing_truncated_or_corrupt_stores_stop_the_server_clearly(tiny_db, tmp_path):
    data = tiny_db.read_bytes()
    assert "no feature store" in serve_fails(tmp_path / "missing.duckdb")
    for name, content, says in [
        ("head.duckdb", data[:3000], "not a readable DuckDB file"),
        ("half.duckdb", data[: len(data) // 2], "truncated"),
        ("tail.duckdb", data[:-5000], "truncated"),  # the last few kB: DuckDB itself opens it
        ("garbage.duckdb", b"\x00qscope" * 5000, "not a readable DuckDB file"),
        ("empty.duckdb", b"", "not a readable DuckDB file"),
    ]:
        (tmp_path / name).write_bytes(content)
        assert says in serve_fails(tmp_path / name), name
    (tmp_path / "folder").mkdir()
    r = subprocess.run(
        [*qscope_cmd(), "serve", "--db", str(tmp_path / "folder")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "no .duckdb file" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def store_with_own_saes(tiny_db, tiny_demo, tmp_path) -> tuple[Path, list[Path]]:
    """A copy of the tiny store whose SAE files are copies in tmp_path (free to damage). The folder copied is the
    one the store records (a given QSCOPE_TEST_TINY_DB was harvested from its own build, not from `tiny_demo`)."""
    saes = tmp_path / "saes"
    db = tmp_path / "own.duckdb"
    shutil.copy(tiny_db, db)
    con = duckdb.connect(str(db))
    recorded = Path(con.execute("SELECT source FROM saes LIMIT 1").fetchone()[0]).parents[1]  # saes/<release>/x
    shutil.copytree(recorded, saes)
    con.execute("UPDATE saes SET source = replace(source, ?, ?)", [str(recorded), str(saes)])
    con.close()
    return db, sorted(saes.rglob("*.sae.pt"))


def test_a_truncated_or_corrupt_sae_file_stops_the_server_clearly(store_with_own_saes):
    db, files = store_with_own_saes
    files[0].write_bytes(files[0].read_bytes()[:-100])
    line = serve_fails(db)
    assert files[0].name in line and "damaged" in line
    files[0].write_bytes(b"\x00 not a torch file" * 100)
    assert "not a torch file" in serve_fails(db)


def test_a_missing_sae_file_only_turns_live_runs_off(store_with_own_saes):
    db, files = store_with_own_saes
    files[0].unlink()
    proc = subprocess.Popen(
        [*qscope_cmd(), "serve", "--db", str(db), "--port", "0"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, deadline = [], time.monotonic() + 60
    try:  # its first lines, up to the one that says what to open
        while not any(ln.startswith("open http") for ln in lines) and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                lines.append(proc.stdout.readline().strip())
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def said(start: str) -> str:
        return next((ln for ln in lines if ln.startswith(start)), "")

    assert files[0].name in said("warning: live runs"), lines
    # a copy of the store has no search index of its own: the server says so, and serves
    assert "background" in said("search: own.duckdb has no semantic index yet"), lines
    assert said("serving 1 store") and said("app database "), lines


class Broken(nn.Module):
    """A model whose every forward fails, as one on a dead device or with a bad edit would."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))  # where the engine looks for the device

    def forward(self, *args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_failing_batch_leaves_the_worker_serving(tiny_db, tmp_path):
    settings = Settings(device="cpu", cache_dir=tmp_path / "cache", rate_steer_per_min=0)
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as client:
        live = client.app.state.live
        lm, _ = live.get(next(iter(live.models))).load()
        ids = lm.tokenizer("The cat", add_special_tokens=False)["input_ids"]
        heard: dict[str, list] = {"bad": [], "good": []}

        def job(name: str, model: nn.Module) -> SteerJob:
            rows = [Row(ids, max_new_tokens=4), Row(ids, max_new_tokens=4)]
            return SteerJob(model, lm.tokenizer, rows, lambda kind, data: heard[name].append((kind, data)))

        worker = SteerWorker(queue_size=4)
        worker.submit(job("bad", Broken()))
        worker.submit(job("good", lm.model))
        wait_until(lambda: heard["good"] and heard["good"][-1][0] == "done", 60, "the good job's end")
        assert heard["bad"] == [("error", "generation failed: CUDA error: an illegal memory access was encountered")]
        assert worker._thread.is_alive() and len(heard["good"][-1][1].steered.tokens) == 4
        # through the API: a temperature that used to make the sampling distribution NaN now samples
        r = client.post("/api/steer", json={"prompt": "The cat", "temperature": 1e-300, "max_new_tokens": 4})
        assert r.status_code == 200, r.text
        r = client.post("/api/steer", json={"prompt": "The cat", "messages": [], "max_new_tokens": 4})
        assert r.status_code == 200, r.text


class FailsOnBigBatches(nn.Module):
    """A model that runs out of memory on batches of more than two rows, and works on smaller ones."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.failures = inner, 0

    def forward(self, input_ids, **kwargs):
        if input_ids.shape[0] > 2:
            self.failures += 1
            raise RuntimeError("CUDA out of memory")
        return self.inner(input_ids=input_ids, **kwargs)


def test_requests_of_a_failed_batch_are_run_again_alone(tiny_demo):
    lm = load_model(tiny_demo / "model", device="cpu")
    ids = lm.tokenizer("The cat", add_special_tokens=False)["input_ids"]
    model, heard = FailsOnBigBatches(lm.model), {"a": [], "b": []}

    def job(name: str) -> SteerJob:
        rows = [Row(ids, max_new_tokens=4), Row(ids, max_new_tokens=4)]
        return SteerJob(model, lm.tokenizer, rows, lambda kind, data: heard[name].append((kind, data)))

    SteerWorker().run_batch([job("a"), job("b")])  # coalesced: 4 rows, which this model cannot take
    assert model.failures == 1
    for name in ("a", "b"):
        assert heard[name][-1][0] == "done" and len(heard[name][-1][1].default.tokens) == 4, heard[name]


def test_a_busy_live_model_answers_503_after_its_wait(tiny_db, tmp_path):
    settings = Settings(device="cpu", cache_dir=tmp_path / "cache", live_wait_s=0.3, rate_inspect_per_min=0)
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as client:
        runner = next(iter(client.app.state.live.models.values()))
        assert client.get("/inspect.json", params={"text": "hello"}).status_code == 200
        held, release = threading.Event(), threading.Event()

        def hold():  # the model busy with someone else's work, until the test lets it go
            with runner.lock:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        t0 = time.monotonic()
        r = client.get("/inspect.json", params={"text": "hello"})
        assert r.status_code == 503 and "busy" in r.json()["error"] and time.monotonic() - t0 < 1.5
        assert client.get("/-/health").json()["status"] == "ok"
        release.set()  # the other work ends
        holder.join(30)
        assert client.get("/inspect.json", params={"text": "hello"}).status_code == 200
