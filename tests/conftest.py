"""Shared fixtures. Every test runs offline: no model hub, no network beyond localhost."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# starlette's TestClient asks for Host "testserver": a name the tests' servers serve (the defaults stay local)
os.environ.setdefault("QSCOPE_ALLOWED_HOSTS", '["testserver"]')

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Models this small run many times slower on two threads when another process shares the two cores
    (the threads spin-wait on each other), so a module that asks for this runs on one and gives it back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """mini-Qwen built once per test session with the ``--tiny`` preset (the real builder, about 30 s).

    QSCOPE_TEST_TINY_DEMO may name a finished tiny build to start from (the build is deterministic, so its
    stages are reused exactly as a rebuild would make them; the builder still checks every stage's digest)."""
    import shutil

    from rich.console import Console

    from qscope.demo.build import build_demo
    from qscope.demo.spec import TINY

    out = tmp_path_factory.mktemp("demo")
    prebuilt = os.environ.get("QSCOPE_TEST_TINY_DEMO")
    if prebuilt and Path(prebuilt, "build.json").is_file():
        shutil.copytree(prebuilt, out, dirs_exist_ok=True)
    build_demo(out, TINY, Console(quiet=True))
    return out


@pytest.fixture(scope="session")
def tiny_db(tiny_demo, tmp_path_factory) -> Path:
    """The tiny default harvested once per session by the real harvest (a few thousand validation tokens), with
    its semantic search index built beside it as `qscope harvest` builds it; or the store QSCOPE_TEST_TINY_DB names
    (harvested the same way from QSCOPE_TEST_TINY_DEMO, its index beside it)."""
    from rich.console import Console

    from qscope.search.semantic import index_store

    if (given := os.environ.get("QSCOPE_TEST_TINY_DB")) and Path(given).is_file():
        index_store(Path(given))  # found when it is there already (the harvest builds it)
        return Path(given).resolve()
    from qscope.harvest.options import HarvestOptions
    from qscope.harvest.run import harvest

    out = tmp_path_factory.mktemp("store") / "tiny.duckdb"
    opts = HarvestOptions(
        model=str(tiny_demo / "model"),
        saes=[tiny_demo / "saes"],
        corpus=str(tiny_demo / "corpus" / "val.jsonl"),
        out=out,
        tokens=4096,
        device="cpu",
        checkpoint_every=0,
    )
    harvest(opts, Console(quiet=True), indexer=index_store)
    return out


@pytest.fixture(scope="session")
def postgres_server():
    """A real Postgres server for the session (tests/helpers/postgres.py), or a skip saying why there is none."""
    from tests.helpers.postgres import PostgresServer, why_not

    if reason := why_not():
        pytest.skip(reason)
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def app_db_url(request, tmp_path) -> str:
    """An empty app database's URL: a SQLite file, then a fresh database on the session's Postgres server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.db"
    return request.getfixturevalue("postgres_server").database()
