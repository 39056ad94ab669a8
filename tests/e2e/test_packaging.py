"""qscope as a user installs it: `pip install .` (not editable) from a clean clone into a fresh virtual
environment, then `qscope build-demo --tiny`, `qscope harvest` and `qscope serve` run from a folder outside the
checkout, with templates and static files found through the installed package.

The fresh environment takes its third-party packages (torch, transformers, ...) from this one through a `.pth`
line, so nothing is downloaded; qscope itself is built from the clone and installed as a wheel would be."""

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{output}"
    return done.stdout + done.stderr


def clean_clone(dest: Path) -> Path:
    """A clone of the committed tree (CI runs on one); a plain copy where the checkout is not a git repository."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    else:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".venv", "data", "build", "*.egg-info", ".git"))
    return dest


def fresh_venv(where: Path) -> Path:
    """A venv whose site-packages sees this environment's packages after its own (qscope installed here wins)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_wheel_install_builds_harvests_and_serves_from_anywhere(tmp_path):
    clone = clean_clone(tmp_path / "clone")
    python = fresh_venv(tmp_path / "venv")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "QSCOPE_DEVICE": "cpu", "QSCOPE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed"]
    run([*install, str(clone)], cwd=tmp_path, env=env)
    shutil.rmtree(clone)  # nothing may come from the checkout any more
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([str(python), "-c", "import qscope.web.render as r; print(r.TEMPLATES_DIR)"], cwd=work, env=env)
    assert str(tmp_path / "venv") in where and "site-packages" in where

    qscope = str(tmp_path / "venv" / "bin" / "qscope")
    # the app database's revisions ship inside the package (Alembic reads them from qscope/appdb/migrations)
    said = run([qscope, "app-db", "upgrade", "--url", "sqlite:///app.db"], cwd=work, env=env)
    assert "upgraded from revision none (empty) to revision" in said
    run([qscope, "build-demo", "--tiny", "--out", "demo"], cwd=work, env=env)
    run(
        [qscope, "harvest", "--model", "demo/model", "--sae", "demo/saes", "--corpus", "demo/corpus/val.jsonl"]
        + ["--out", "tiny.duckdb", "--tokens", "2048", "--checkpoint-every", "0"],
        cwd=work,
        env=env,
    )
    port = free_port()
    with open(work / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [qscope, "serve", "--db", "tiny.duckdb", "--port", str(port)], cwd=work, env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, (work / "serve.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(base + "/-/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        home = urllib.request.urlopen(base + "/", timeout=30).read().decode()
        assert "<html" in home and "tiny" in home
        htmx = urllib.request.urlopen(base + "/-/static/vendor/htmx-2.0.11.min.js", timeout=30)
        assert htmx.status == 200 and len(htmx.read()) > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=30)
