"""A real Postgres server for the tests of the app database: Debian's `postgresql` package (scripts/install.sh
--test installs it where apt works), initialised in a temporary folder, listening on a free port of 127.0.0.1
and a unix socket in that folder, stopped at the end of the session.

Postgres refuses to run as root: as root, the server runs as the `postgres` user (the package makes it) with the
folder given to it. `why_not()` says in one line why no server can start here (the tests skip with it)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl (Debian: /usr/lib/postgresql/<version>/bin), or None."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def why_not() -> str | None:
    if bin_dir() is None:
        return "no Postgres server here (initdb not found): `apt-get install postgresql` or scripts/install.sh --test"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e .[dev] (or .[postgres])"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway server; `database()` makes a fresh, empty database on it and gives its URL."""

    def __init__(self) -> None:
        binaries = bin_dir()
        assert binaries is not None, why_not()
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="qscope-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.count = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        self.count += 1
        name = f"qscope_test_{self.count}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
