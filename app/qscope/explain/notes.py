"""People's own words, in the app database (SQLAlchemy, as qscope.steer.runs): notes and explanations written on a
feature, and lists of features (a name, a description, features each with a note).

Each note and list has a short random id for its permalink (/notes/{id}, /lists/{id}). The tables are made on
first use (qscope.appdb); text is stored as given (pages escape it). Search over them is a plain word match
(`search`): every word of the query must start a word of the text.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from qscope.appdb import Base, open_app_db

NOTE_KINDS = ("explanation", "note")
SQL_WORDS = 8  # query words narrowed in SQL (NoteStore.search)


class NoteRow(Base):
    __tablename__ = "feature_notes"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[str] = mapped_column(String(200), index=True)
    sae_id: Mapped[str] = mapped_column(String(300), index=True)
    feature: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # explanation | note
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(80))


class ListRow(Base):
    __tablename__ = "feature_lists"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)


class ItemRow(Base):
    __tablename__ = "feature_list_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list_id: Mapped[str] = mapped_column(ForeignKey("feature_lists.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(200))
    sae_id: Mapped[str] = mapped_column(String(300))
    feature: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text)


@dataclass
class Note:
    id: str
    created_at: str
    model_id: str
    sae_id: str
    feature: int
    kind: str
    text: str
    author: str


@dataclass
class ListItem:
    model_id: str
    sae_id: str
    feature: int
    note: str


@dataclass
class UserList:
    id: str
    created_at: str
    name: str
    description: str
    items: list[ListItem] = field(default_factory=list)


def _note(r: NoteRow) -> Note:
    return Note(
        r.id, r.created_at.isoformat(timespec="seconds"), r.model_id, r.sae_id, r.feature, r.kind, r.text, r.author
    )


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def matches(q: str, text: str) -> bool:
    """Whether every word of q starts a word of text (case-insensitive)."""
    words = _words(text)
    return bool(_words(q)) and all(any(w.startswith(qw) for w in words) for qw in _words(q))


class NoteStore:
    """Notes and lists in the app database; the schema is made or upgraded when it opens (qscope.appdb)."""

    def __init__(self, url: str) -> None:
        self.engine = open_app_db(url)
        self.version = 0  # bumped on every write (search indexes rebuild when it moves)
        self._lock = threading.Lock()

    def _bump(self) -> None:
        with self._lock:
            self.version += 1

    def add_note(
        self, model_id: str, sae_id: str, feature: int, text: str, kind: str = "note", author: str = ""
    ) -> Note:
        row = NoteRow(
            id=secrets.token_urlsafe(8),
            created_at=datetime.now(UTC),
            model_id=model_id,
            sae_id=sae_id,
            feature=feature,
            kind=kind,
            text=text,
            author=author,
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        self._bump()
        return _note(row)

    def note(self, note_id: str) -> Note | None:
        with Session(self.engine) as session:
            row = session.get(NoteRow, note_id)
            return _note(row) if row else None

    def notes(self, model_id: str, sae_id: str, features: list[int] | None = None) -> list[Note]:
        """The notes on these features of one SAE (all its features when None), oldest first."""
        q = select(NoteRow).where(NoteRow.model_id == model_id, NoteRow.sae_id == sae_id)
        if features is not None:
            q = q.where(NoteRow.feature.in_(features))
        with Session(self.engine) as session:
            return [_note(r) for r in session.scalars(q.order_by(NoteRow.created_at, NoteRow.id))]

    def all_notes(self) -> list[Note]:
        with Session(self.engine) as session:
            return [_note(r) for r in session.scalars(select(NoteRow).order_by(NoteRow.created_at))]

    def signature(self) -> str:
        """Changes whenever a note is added (any process)."""
        with Session(self.engine) as session:
            n, last = session.execute(select(func.count(NoteRow.id), func.max(NoteRow.created_at))).one()
        return f"{n}-{last}"

    def create_list(self, name: str, description: str, items: list[ListItem]) -> UserList:
        list_id = secrets.token_urlsafe(8)
        with Session(self.engine) as session, session.begin():
            session.add(ListRow(id=list_id, created_at=datetime.now(UTC), name=name, description=description))
            session.flush()
            for i, it in enumerate(items):
                session.add(
                    ItemRow(
                        list_id=list_id,
                        position=i,
                        model_id=it.model_id,
                        sae_id=it.sae_id,
                        feature=it.feature,
                        note=it.note,
                    )
                )
        self._bump()
        found = self.get_list(list_id)
        assert found is not None
        return found

    def add_item(self, list_id: str, item: ListItem) -> UserList | None:
        with Session(self.engine) as session, session.begin():
            # the list's row is written first: its lock (SQLite: the database's write lock) holds a second add to
            # the same list until this one commits, so that one reads the position after this one's
            same_name = update(ListRow).where(ListRow.id == list_id).values(name=ListRow.name)
            touched = session.connection().execute(same_name)
            if touched.rowcount == 0:
                return None
            last = session.scalar(select(func.max(ItemRow.position)).where(ItemRow.list_id == list_id))
            session.add(
                ItemRow(
                    list_id=list_id,
                    position=(last if last is not None else -1) + 1,
                    model_id=item.model_id,
                    sae_id=item.sae_id,
                    feature=item.feature,
                    note=item.note,
                )
            )
        self._bump()
        return self.get_list(list_id)

    def get_list(self, list_id: str) -> UserList | None:
        with Session(self.engine) as session:
            row = session.get(ListRow, list_id)
            if row is None:
                return None
            q = select(ItemRow).where(ItemRow.list_id == list_id).order_by(ItemRow.position)
            items = [ListItem(i.model_id, i.sae_id, i.feature, i.note) for i in session.scalars(q)]
            return UserList(row.id, row.created_at.isoformat(timespec="seconds"), row.name, row.description, items)

    def lists(self, limit: int | None = None) -> list[UserList]:
        """The lists (all, or the `limit` newest), newest first, without their items."""
        with Session(self.engine) as session:
            rows = session.scalars(select(ListRow).order_by(ListRow.created_at.desc()).limit(limit))
            return [UserList(r.id, r.created_at.isoformat(timespec="seconds"), r.name, r.description) for r in rows]

    def lists_with(self, model_id: str, sae_id: str, feature: int) -> list[UserList]:
        """The lists that hold this feature (without their items)."""
        q = (
            select(ListRow)
            .join(ItemRow, ItemRow.list_id == ListRow.id)
            .where(ItemRow.model_id == model_id, ItemRow.sae_id == sae_id, ItemRow.feature == feature)
            .distinct()
            .order_by(ListRow.name)
        )
        with Session(self.engine) as session:
            return [
                UserList(r.id, r.created_at.isoformat(timespec="seconds"), r.name, r.description)
                for r in session.scalars(q)
            ]

    def search(self, q: str, limit: int = 30) -> tuple[list[Note], list[UserList]]:
        """Notes and lists whose text (a list: name, description or a feature's note) holds every word of q."""
        if not _words(q):
            return [], []
        query = select(NoteRow).order_by(NoteRow.created_at)
        # a first cut in SQL on a few distinct words (SQLite refuses an expression of ~1,000 terms, and a long
        # query is easy to send); `matches` then checks every word, and word starts only
        for w in list(dict.fromkeys(_words(q)))[:SQL_WORDS]:
            query = query.where(func.lower(NoteRow.text).contains(w, autoescape=True))
        with Session(self.engine) as session:
            rows = [_note(r) for r in session.scalars(query)]
        notes = [n for n in rows if matches(q, n.text)][:limit]
        found = []
        for lst in self.lists():
            full = self.get_list(lst.id)
            text = " ".join([lst.name, lst.description, *(i.note for i in (full.items if full else []))])
            if matches(q, text):
                found.append(lst)
        return notes, found[:limit]

    def close(self) -> None:
        self.engine.dispose()
