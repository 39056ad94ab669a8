"""A feature store of another layout (the `schema_version` in its meta table) is refused with one line that says
what to run: an older one is harvested again, a newer one needs a newer qscope. Checked where the server opens a
store and where `qscope serve` checks it before it binds (on a copy of the tiny store: the cache stays as it is)."""

import shutil

import duckdb
import pytest
from typer.testing import CliRunner

from qscope.cli import cli
from qscope.store.queries import Store, StoreError
from qscope.store.schema import SCHEMA_VERSION


@pytest.fixture(params=[SCHEMA_VERSION - 1, SCHEMA_VERSION + 1], ids=["older", "newer"])
def other_layout(request, tiny_db, tmp_path):
    path = tmp_path / "store.duckdb"
    shutil.copy(tiny_db, path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(request.param)])
    con.close()
    says = "run `qscope harvest` again" if request.param < SCHEMA_VERSION else "written by a newer qscope"
    todo = "older than the version" if request.param < SCHEMA_VERSION else "upgrade qscope to serve it"
    return path, request.param, says, todo


def test_the_server_refuses_it_in_one_line(other_layout):
    path, version, says, todo = other_layout
    with pytest.raises(StoreError) as err:
        Store(path)
    line = str(err.value)
    assert "\n" not in line and f"schema version {version}," in line and says in line and todo in line


def test_serve_stops_before_it_binds_with_one_line(other_layout):
    path, version, says, todo = other_layout
    out = CliRunner().invoke(cli, ["serve", "--db", str(path)])
    assert out.exit_code == 2
    (line,) = [x for x in out.output.splitlines() if x.startswith("error:")]
    assert f"schema version {version}," in line and says in line and todo in line
