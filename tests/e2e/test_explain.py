"""`qscope explain` end to end: the tiny mini-Qwen served by a real `qscope serve` explains its own features through
the server's OpenAI endpoint. The run writes an explanation and scores for every chosen feature, is killed and
resumed without losing or redoing anything, and the server's pages and search show what it wrote. Also: the
in-process Hugging Face explainer, and an endpoint that is down."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request

import duckdb
import pytest

from qscope.explain.scoring import trust
from tests.helpers.server import free_port, qscope_cmd, serving

pytestmark = pytest.mark.slow

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
N = 6
SERVER_ENV = {
    "QSCOPE_STEER_MAX_NEW_TOKENS": "64",
    "QSCOPE_STEER_QUEUE_SIZE": "64",
    "QSCOPE_STEER_TIMEOUT_S": "120",
    "OMP_NUM_THREADS": "1",  # a small model on a shared CPU: one thread, not two that spin-wait
}


@pytest.fixture(scope="module")
def store(tiny_db, tmp_path_factory):
    """A copy of the tiny store: the explanations file goes beside it, not beside the session's shared one."""
    path = tmp_path_factory.mktemp("explain") / "tiny.duckdb"
    shutil.copy(tiny_db, path)
    return path


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    with serving(store, tmp_path_factory, **SERVER_ENV) as base:
        yield base


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


def explain_cmd(store, *args: str) -> list[str]:
    return [*qscope_cmd(), "explain", "--db", str(store), "--sae", SAE, *args]


def rows(path) -> list[tuple]:
    if not path.exists():
        return []
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT feature, explanation, created_at, detection, fuzzing, scored_at FROM explanations ORDER BY feature"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def scores(path) -> dict[int, tuple]:
    con = sqlite3.connect(path)
    try:
        got = con.execute("SELECT feature, detection, detection_n, fuzzing, fuzzing_n FROM explanations").fetchall()
    finally:
        con.close()
    return {r[0]: r[1:] for r in got if r[1] is not None or r[3] is not None}


def test_explain_through_qscope_serve_killed_resumed_and_shown(server, store):
    model = json.loads(get(server + "/v1/models"))["data"][0]["id"]
    env = os.environ | {"QSCOPE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    args = explain_cmd(
        store,
        "--top",
        str(N),
        "--endpoint",
        server + "/v1",
        "--explainer-model",
        model,
        "--concurrency",
        "4",
        "--pool",
        "64",
    )
    out = store.with_name(store.name + ".explanations.sqlite")
    stamp = (store.stat().st_size, store.stat().st_mtime_ns)
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not rows(out) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # as a crash or an OOM kill would: no clean-up at all
    first.wait()
    before = rows(out)
    assert first.returncode == -signal.SIGKILL and 1 <= len(before)
    assert sum(r[5] is not None for r in before) < N  # killed mid-run

    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    done_before = sum(r[5] is not None for r in before)
    assert f"{N} features chosen, {done_before} already done, {N - done_before} to do" in second.stderr
    after = rows(out)
    assert len(after) == N and all(r[1] and r[3] is not None and r[4] is not None for r in after), after
    assert all(0.0 <= r[3] <= 1.0 and 0.0 <= r[4] <= 1.0 for r in after)
    kept = {r[0]: r[1:3] for r in before}
    assert all(kept[r[0]] == r[1:3] for r in after if r[0] in kept)  # nothing written before the kill was redone
    assert (store.stat().st_size, store.stat().st_mtime_ns) == stamp  # the feature store itself is untouched

    # the tiny model's prompts (about 1,200 tokens) pass its 1,024-token context: /v1 refuses them
    # (context_length_exceeded) and the run shows fewer contexts, and says so
    if len(after) > len(before):
        assert "explainer prompts were cut" in second.stderr and "prompt cut to" in second.stderr, second.stderr
    scored_now = [k for k in scores(out) if k not in {r[0] for r in before if r[5] is not None}]
    at_chance = sum(trust(*scores(out)[k]) == "at chance" for k in scored_now)
    assert f"scored {len(scored_now)} ({at_chance} at chance)" in second.stderr, second.stderr

    third = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and f"{N} already done, 0 to do" in third.stderr

    for feature, text, *_ in after:  # the running server shows what the run wrote, scores beside it
        page = get(f"{server}/{model}/{SAE}/{feature}")
        assert "detection" in page and "fuzzing" in page and f"<code>{model}</code>" in page
        data = json.loads(get(f"{server}/{model}/{SAE}/{feature}.json"))
        assert data["words"]["explanation"]["text"] == text and data["words"]["explanation"]["scored_at"]
    listing = json.loads(get(f"{server}/{model}/{SAE}.json?sort=density&per_page={N}"))
    assert {int(f) for f in listing["explanations"]} == {r[0] for r in after}


def test_in_process_explainer_on_a_users_list(store, tiny_demo, tmp_path):
    """The features of a list made on /lists, explained by the Hugging Face model loaded in the process."""
    from qscope.explain.notes import ListItem, NoteStore

    url = f"sqlite:///{tmp_path}/app.db"
    model_id = duckdb.connect(str(store), read_only=True).execute("SELECT model_id FROM saes LIMIT 1").fetchone()[0]
    chosen, _ = NoteStore(url).create_list("to explain", "", [ListItem(model_id, SAE, f, "") for f in (335, 23)])
    out = tmp_path / "local.sqlite"
    args = explain_cmd(
        store, "--list", chosen.id, "--hf", str(tiny_demo / "model"), "--no-score", "--out", str(out), "--device", "cpu"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1", "QSCOPE_APP_DB_URL": url}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "2 features chosen" in done.stderr and "explained 2, scored 0 (0 at chance), failed 0" in done.stderr
    assert "2 explainer prompts were cut" in done.stderr  # 1,243 and 1,313 tokens: past the tiny model's 1,024
    assert [r[0] for r in rows(out)] == [23, 335] and all(r[1] for r in rows(out))
    missing = subprocess.run(
        explain_cmd(store, "--list", "nope", "--hf", "x"), capture_output=True, text=True, timeout=300, env=env
    )
    assert missing.returncode == 2 and "no list 'nope'" in missing.stderr


def test_endpoint_down_stops_with_a_message_and_loses_nothing(store, tmp_path):
    out = tmp_path / "down.sqlite"
    url = f"http://127.0.0.1:{free_port()}/v1"
    args = explain_cmd(
        store,
        "--features",
        "1-8",
        "--endpoint",
        url,
        "--explainer-model",
        "m",
        "--retries",
        "1",
        "--concurrency",
        "2",
        "--no-score",
        "--out",
        str(out),
    )
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert f"explain failed: {url}/chat/completions did not answer" in done.stderr
    assert "stopped early" in done.stderr and "run the same command again" in done.stderr
    assert rows(out) == []
    con = sqlite3.connect(out)
    failures = con.execute("SELECT feature, stage, message FROM failures").fetchall()
    con.close()
    assert failures and all(s == "explain" and "did not answer" in m for _, s, m in failures)
    missing = subprocess.run(explain_cmd(store, "--features", "1"), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "give --endpoint URL and --explainer-model NAME" in missing.stderr


def test_bench_explain_bounded_run(store):
    """`qscope bench explain` in a small run: both modes explain every feature; the JSON line comes last."""
    args = [
        *qscope_cmd(),
        "bench",
        "explain",
        "--db",
        str(store),
        "--sae",
        SAE,
        "--features",
        "3",
        "--concurrency",
        "3",
        "--reps",
        "1",
        "--server-threads",
        "1",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["features"] == 3 and report["features_per_min_1"] > 0 and report["features_per_min_3"] > 0
    assert report["requests_1"] >= 3 and report["speedup"] > 0 and report["speedup_goal"] == 3.0
