"""The store writer on hand-made rows: what goes in comes back, sorted; the write is atomic."""

import duckdb
import pytest

from qscope.store.writer import write_store
from tests.helpers.stores import sae_tables


def test_rows_come_back_sorted_and_whole(tmp_path):
    out = tmp_path / "s.duckdb"
    out.with_name("s.duckdb.tmp").write_text("stale")
    size = write_store(out, {"model_id": "m"}, [sae_tables("z"), sae_tables("a")], ["<eos>", " the", "é"])
    assert size == out.stat().st_size and not out.with_name("s.duckdb.tmp").exists()
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT sae_id, feature FROM features").fetchall() == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("z", 0),
        ("z", 1),
        ("z", 2),
    ]
    one = "SELECT label, top_tokens, hist FROM features WHERE sae_id = 'a' AND feature = 2"
    assert con.execute(one).fetchall() == [("label 2", [2], [2, 0])]
    got = con.execute(
        "SELECT feature, kind, bin, act, \"window\", pos, token_ids, acts FROM contexts WHERE sae_id = 'a'"
    ).fetchall()
    assert got == [
        (0, "top", None, 2.5, 8, 0, [4], [1.0]),
        (0, "interval", 3, 0.5, 9, 2, [8, 9, 10, 11], [2.0, 2.25, 2.5, 2.75]),
        (2, "top", None, 1.5, 7, 1, [0, 1, 2], [0.0, 0.25, 0.5]),
    ]
    assert con.execute("SELECT feature, other_sae_id FROM neighbors WHERE sae_id = 'z'").fetchall() == [
        (0, "a"),
        (1, "b"),
    ]
    assert con.execute("SELECT token FROM vocab ORDER BY token_id").fetchall() == [("<eos>",), (" the",), ("é",)]
    assert con.execute("SELECT hist_edges FROM saes LIMIT 1").fetchone() == ([1.0, 2.0, 4.0],)
    con.close()


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "bad.duckdb"
    broken = sae_tables("a")
    del broken.info["tokens"]
    with pytest.raises(KeyError):
        write_store(out, {}, [broken], ["x"])
    assert list(tmp_path.iterdir()) == []
