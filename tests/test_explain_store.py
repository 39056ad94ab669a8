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
