"""qscope as a process: the command, its environment, and `qscope serve` on a free loopback port."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qscope_cmd() -> list[str]:
    qscope = Path(sys.executable).parent / "qscope"
    return [str(qscope)] if qscope.exists() else [sys.executable, "-c", "from qscope.cli import main; main()"]


@contextmanager
def serving(db: Path | list[Path], tmp_path_factory, **env_extra: str) -> Iterator[str]:
    """`qscope serve --db db` (one store or several) on a free loopback port, for a module's browser tests;
    yields its base URL."""
    dbs = ["--db" if i % 2 == 0 else str(p) for p in (db if isinstance(db, list) else [db]) for i in range(2)]
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "QSCOPE_DEVICE": "cpu",
        "QSCOPE_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        **env_extra,
    }
    with open(log, "w") as out:
        proc = subprocess.Popen([*qscope_cmd(), "serve", *dbs, "--port", str(port)], stdout=out, stderr=out, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"qscope serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(base + "/-/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"qscope serve did not answer within 60 s: {log.read_text()[-2000:]}")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def cli_env() -> dict[str, str]:
    return os.environ | {
        "HF_HUB_OFFLINE": "1",
        "QSCOPE_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
