"""The explanations file: what the writer commits, readers see at once (read-only, while the writer holds the
file open); scores, failures, and what a new explanation replaces."""

from qscope.explain.scoring import Score
from qscope.explain.store import ExplanationReader, ExplanationWriter, explanations_path


def test_writer_and_reader_side_by_side(tmp_path):
    path = explanations_path(tmp_path / "x.duckdb")
    assert path.name == "x.duckdb.explanations.sqlite"
    reader = ExplanationReader(path)
    assert reader.get("s", 1) is None and reader.all() == [] and reader.signature == ""
    w = ExplanationWriter(path)
    w.put_failure("s", 2, "explain", "endpoint down")
    w.put_explanation("s", 1, "cats <b>and</b> dogs", "mini")
    got = reader.get("s", 1)
    assert got.text == "cats <b>and</b> dogs" and got.explainer == "mini" and not got.scored
    before = reader.signature
    w.put_scores("s", 1, Score(0.9, 20, 1), Score(None, 0, 0), "mini")
    got = reader.get("s", 1)
    assert (got.detection, got.detection_n, got.fuzzing, got.unreadable, got.scorer) == (0.9, 20, None, 1, "mini")
    assert got.scored and reader.signature != before
    assert reader.failures() == [("s", 2, "explain", "endpoint down")]
    w.put_explanation("s", 2, "birds", "mini")  # a success clears the feature's failure
    assert reader.failures() == [] and set(reader.many("s", [1, 2, 3])) == {1, 2}
    assert w.done() == ({("s", 1), ("s", 2)}, {("s", 1)})
    w.put_explanation("s", 1, "cats", "other")  # a new text drops the old text's scores
    assert not reader.get("s", 1).scored and reader.get("s", 1).explainer == "other"
    w.close()
    assert [e.feature for e in ExplanationReader(path).all()] == [1, 2]


def test_export_with_the_store(tiny_db, tmp_path):
    """Automatic explanations with their scores and people's notes, one row per feature, in three formats."""
    import json
    import shutil

    import duckdb

    from qscope.explain.export import export_rows, write_export
    from qscope.explain.notes import NoteStore
    from qscope.store.queries import Store

    db = tmp_path / "t.duckdb"
    shutil.copy(tiny_db, db)
    store = Store(db)
    sae_id = sorted(store.saes)[0]
    model_id = store.saes[sae_id].model_id
    w = ExplanationWriter(explanations_path(db))
    w.put_explanation(sae_id, 3, "commas in lists", "m")
    w.put_scores(sae_id, 3, Score(0.75, 20, 0), Score(0.5, 10, 2), "m")
    w.put_explanation("not-in-this-store", 1, "x", "m")
    w.close()
    notes = NoteStore(f"sqlite:///{tmp_path}/app.db")
    notes.add_note(model_id, sae_id, 5, 'a "quoted", note', "note", "Ada")
    rows = export_rows(store, ExplanationReader(explanations_path(db)), notes)
    assert [(r["sae_id"], r["feature"]) for r in rows] == [(sae_id, 3), (sae_id, 5)]
    assert rows[0]["explanation"] == "commas in lists" and rows[0]["detection"] == 0.75 and rows[0]["fuzzing_n"] == 10
    assert rows[0]["label"] == store.label(sae_id, 3) and rows[1]["explanation"] is None
    assert rows[1]["people"] == [
        {"kind": "note", "text": 'a "quoted", note', "author": "Ada", "created_at": rows[1]["people"][0]["created_at"]}
    ]
    for suffix in (".jsonl", ".parquet", ".csv"):
        write_export(rows, tmp_path / f"out{suffix}")
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == rows
    got = duckdb.sql(f"SELECT feature, detection, explanation FROM '{tmp_path}/out.parquet'").fetchall()
    assert got == [(3, 0.75, "commas in lists"), (5, None, None)]
    got = duckdb.sql(f"SELECT feature, people FROM read_csv('{tmp_path}/out.csv')").fetchall()
    assert got[1][0] == 5 and json.loads(got[1][1])[0]["text"] == 'a "quoted", note'
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []  # nothing half-written left
    store.close()


def test_note_search_takes_a_query_of_a_thousand_words(tmp_path):
    """SQLite refuses a WHERE of ~1,000 LIKE terms: a long query narrows in SQL on a few words, then checks all."""
    from qscope.explain.notes import NoteStore

    notes = NoteStore(f"sqlite:///{tmp_path}/app.db")
    notes.add_note("m", "s", 1, "every word here", "note", "Ada")
    found, _ = notes.search("every " + "word " * 1000)
    assert [n.text for n in found] == ["every word here"]
    assert notes.search("every word " + "absent " * 1000)[0] == []
