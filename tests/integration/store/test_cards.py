"""Feature cards (qscope.store.cards): the dashboard packed into one value must say exactly what the normalised
tables say, since the server reads only the card."""

import duckdb
import numpy as np
import pytest

from qscope.store.cards import CardContext, CardLogit, CardRow, decode_card, encode_card
from qscope.store.queries import Store, StoreError
from qscope.store.writer import write_store
from tests.helpers.stores import sae_tables


def test_a_card_round_trips():
    header = {
        "row": [0.5, 1.0, 2.0, 3, "x", [1], [0, 2], 0.125],
        "contexts": [[0, -1, 0, 2.0, 7, 1, 3], [1, 4, 0, 0.5, 9, 0, 1]],
        "logits": [[1, 0, 5, 0.25]],
        "neighbors": [["s", 3, 0.9, 0]],
    }
    ids = np.array([10, 11, 12, 13], dtype=np.int32)
    acts = np.array([0.0, 2.0, 0.5, 0.5], dtype=np.float32)
    card = decode_card(encode_card(header, ids, acts))
    assert card.row == CardRow(*header["row"]) and card.contexts == [CardContext(*c) for c in header["contexts"]]
    assert card.logits == [CardLogit(*g) for g in header["logits"]] and card.row.label == "x"
    assert card.token_ids == [[10, 11, 12], [13]] and card.acts == [[0.0, 2.0, 0.5], [0.5]]


def test_cards_hold_the_written_rows(tmp_path):
    out = tmp_path / "s.duckdb"
    write_store(out, {"model_id": "m"}, [sae_tables("z"), sae_tables("a")], ["<eos>", " the", "é", *map(str, range(9))])
    store = Store(out)
    with store.reader() as r:
        d = r.feature("a", 0)
        assert r.feature("a", 7) is None
    assert (d.row.label, d.row.max_act, d.hist, d.interval_width) == ("label 0", 0.0, [0, 0], 0.0)
    assert [(c.kind, c.act, c.window, c.pos, c.acts) for c in d.top] == [("top", 2.5, 8, 0, [1.0])]
    assert d.top[0].tokens == ["1"]  # token id 4 in this vocabulary
    (b,) = d.intervals
    assert (b.bin, [c.acts for c in b.contexts]) == (3, [[2.0, 2.25, 2.5, 2.75]])
    assert ([e.token_id for e in d.logits_pos], [e.token_id for e in d.logits_neg]) == ([], [6])
    assert [(n.sae_id, n.feature, n.label) for n in d.neighbors] == [("a", 1, "label 1")]
    store.close()


def test_an_older_store_is_refused_with_a_clear_message(tmp_path):
    out = tmp_path / "old.duckdb"
    write_store(out, {}, [sae_tables("a")], ["x"])
    con = duckdb.connect(str(out))
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match=r"schema version 1.*run `qscope harvest` again"):
        Store(out)


def _from_tables(con, sae_id: str, f: int, per_bin: int = 5):
    """The dashboard's facts read the slow way, from the normalised tables."""
    ctx = con.execute(
        'SELECT kind, bin, rank, act, "window", pos, token_ids, acts FROM contexts WHERE sae_id = ? AND feature = ? '
        "AND (kind = 'top' OR rank < ?) ORDER BY kind = 'interval', bin DESC, rank",
        [sae_id, f, per_bin],
    ).fetchall()
    logits = con.execute(
        "SELECT sign, token_id, value FROM logits WHERE sae_id = ? AND feature = ? ORDER BY sign DESC, rank",
        [sae_id, f],
    ).fetchall()
    nbrs = con.execute(
        "SELECT n.other_sae_id, n.other_feature, n.cosine, x.label FROM neighbors n JOIN features x "
        "ON x.sae_id = n.other_sae_id AND x.feature = n.other_feature WHERE n.sae_id = ? AND n.feature = ? "
        "ORDER BY n.other_sae_id != ?, n.other_sae_id, n.rank",
        [sae_id, f, sae_id],
    ).fetchall()
    sql = "SELECT label, density, max_act, hist FROM features WHERE sae_id = ? AND feature = ?"
    return ctx, logits, nbrs, con.execute(sql, [sae_id, f]).fetchone()


def test_every_card_of_a_real_harvest_matches_its_tables(tiny_db):
    store = Store(tiny_db)
    con = duckdb.connect(str(tiny_db), read_only=True)
    checked = 0
    for sae_id, info in store.saes.items():
        for f in range(0, info.d_sae, 7):
            ctx, logits, nbrs, (label, density, max_act, hist) = _from_tables(con, sae_id, f)
            with store.reader() as r:
                d = r.feature(sae_id, f)
            contexts = [*d.top, *(c for b in d.intervals for c in b.contexts)]
            got = [(c.kind, c.bin, c.rank, c.act, c.window, c.pos, c.acts) for c in contexts]
            assert got == [(k, b, rk, a, w, p, acts) for k, b, rk, a, w, p, _, acts in ctx]
            assert [c.tokens for c in contexts] == [store.decode(ids) for *_, ids, _ in ctx]
            assert [(e.token_id, e.value) for e in d.logits_pos + d.logits_neg] == [(t, v) for _, t, v in logits]
            assert [(n.sae_id, n.feature, n.cosine, n.label) for n in d.neighbors] == nbrs
            assert (d.row.label, d.row.density, d.row.max_act, d.hist) == (label, density, max_act, hist)
            checked += 1
    assert checked > 100
    con.close()
    store.close()
