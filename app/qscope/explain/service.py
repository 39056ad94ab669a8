"""What a server shows of explanations: the automatic ones (each served store's explanations file, read-only) and
people's own (the app database's notes and lists), gathered per feature for the pages.

Built once by create_app as `app.state.explained`. The app database is opened on first use; while it is a SQLite
file that does not exist yet, reads find nothing and create nothing (a server nobody writes notes on writes no file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qscope.appdb import is_missing_file
from qscope.appdb.first_use import OpenedOnFirstUse
from qscope.explain.notes import Note, NoteStore, UserList
from qscope.explain.store import Explanation, ExplanationReader, explanations_path
from qscope.search.explained import ExplainedText
from qscope.store.queries import Store


@dataclass
class FeatureWords:
    """Everything written about one feature: what the feature page shows beside the dashboard."""

    explanation: Explanation | None  # the automatic one, with its scores
    notes: list[Note] = field(default_factory=list)  # people's explanations and notes, oldest first
    lists: list[UserList] = field(default_factory=list)  # the lists that hold it


@dataclass
class ExplanationLine:
    """One feature's explanation in a list of features."""

    text: str
    by: str  # 'auto' or 'person'
    detection: float | None = None
    fuzzing: float | None = None
    trust: str = "unscored"  # of an automatic one: 'beats chance', 'at chance' or 'unscored'

    @property
    def at_chance(self) -> bool:
        return self.trust == "at chance"


class Explained:
    def __init__(self, stores: list[Store], app_db_url: str) -> None:
        self.readers = {s.path: ExplanationReader(explanations_path(s.path)) for s in stores}
        self._store_of: dict[tuple[str, str], Path] = {}
        for s in stores:
            for info in s.saes.values():
                self._store_of.setdefault((info.model_id, info.sae_id), s.path)
        self.db_url = app_db_url
        self._notes = OpenedOnFirstUse(lambda: NoteStore(self.db_url))

    def reader(self, store: Store) -> ExplanationReader:
        return self.readers[store.path]

    @property
    def notes(self) -> NoteStore:
        """The app database's notes and lists, opened (and created) on first use."""
        return self._notes.get()

    def notes_if_any(self) -> NoteStore | None:
        """The notes store for reading, or None while there is no app database yet."""
        if (opened := self._notes.opened) is not None:
            return opened
        return None if is_missing_file(self.db_url) else self.notes

    def words(self, store: Store, model_id: str, sae_id: str, feature: int) -> FeatureWords:
        out = FeatureWords(self.reader(store).get(sae_id, feature))
        if (notes := self.notes_if_any()) is not None:
            out.notes = notes.notes(model_id, sae_id, [feature])
            out.lists = notes.lists_with(model_id, sae_id, feature)
        return out

    def lines(self, store: Store, model_id: str, sae_id: str, features: list[int]) -> dict[int, ExplanationLine]:
        """One line per explained feature, for lists: the automatic explanation with its scores, else the first
        explanation a person wrote."""
        out = {
            f: ExplanationLine(e.text, "auto", e.detection, e.fuzzing, e.trust)
            for f, e in self.reader(store).many(sae_id, features).items()
        }
        if (notes := self.notes_if_any()) is not None:
            for n in notes.notes(model_id, sae_id, features):
                if n.kind == "explanation" and n.feature not in out:
                    out[n.feature] = ExplanationLine(n.text, "person")
        return out

    def text_signature(self) -> str:
        """Changes whenever an explanation or note is written (for the search over them)."""
        notes = self.notes_if_any()
        return "|".join([*(r.signature for r in self.readers.values()), notes.signature() if notes else ""])

    def texts(self) -> list[ExplainedText]:
        """Every explanation and note, for the search over them."""
        out = [
            ExplainedText(path, e.sae_id, e.feature, e.text, f"auto ({e.explainer})", e.trust == "at chance")
            for path, r in self.readers.items()
            for e in r.all()
        ]
        if (notes := self.notes_if_any()) is not None:
            for n in notes.all_notes():
                path = self._store_of.get((n.model_id, n.sae_id))
                if path is not None:
                    who = f"{'explanation' if n.kind == 'explanation' else 'note'} by {n.author or 'someone'}"
                    out.append(ExplainedText(path, n.sae_id, n.feature, n.text, who))
        return out

    def close(self) -> None:
        if (notes := self._notes.opened) is not None:
            notes.close()
