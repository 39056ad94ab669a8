"""People's own words, in the app database (SQLAlchemy, as qscope.steer.runs): notes and explanations written on a
feature, and lists of features (a name, a description, features each with a note).

Each note and list has a short random id for its permalink (/notes/{id}, /lists/{id}) and an owner secret
(qscope.explain.owners: returned once by the create methods, only its hash stored) that edits and deletes it, and
adds to a list. The tables are made on first use (qscope.appdb); text is stored as given (pages escape it).
Search over them is a plain word match (`search`): every word of the query must start a word of the text, narrowed
in SQL first.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from qscope.appdb import open_app_db
from qscope.explain.notes_tables import ItemRow, ListRow, NoteRow
from qscope.explain.owners import check, new_secret

NOTE_KINDS = ("explanation", "note")
SQL_WORDS = 8  # query words narrowed in SQL (NoteStore.search)
SEARCH_ROWS = 500  # most notes, and most lists, a search checks word by word after SQL's cut (newest first)


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
    owned: bool = True  # False: written before owners existed (nobody can change it)
    edited_at: str = ""


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
    owned: bool = True  # False: made before owners existed (nobody can change it)
    edited_at: str = ""


def _when(t: datetime | None) -> str:
    return t.isoformat(timespec="seconds") if t else ""


def _note(r: NoteRow) -> Note:
    return Note(
        r.id,
        _when(r.created_at),
        r.model_id,
        r.sae_id,
        r.feature,
        r.kind,
        r.text,
        r.author,
        r.owner_hash is not None,
        _when(r.edited_at),
    )


def _list(r: ListRow, items: list[ListItem] | None = None) -> UserList:
    owned = r.owner_hash is not None
    return UserList(r.id, _when(r.created_at), r.name, r.description, items or [], owned, _when(r.edited_at))


def _contains(column, word: str):
    return func.lower(column).contains(word, autoescape=True)


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
    ) -> tuple[Note, str]:
        """The note written, and its owner secret (the only time it is known)."""
        secret, owner_hash = new_secret()
        row = NoteRow(
            id=secrets.token_urlsafe(8),
            created_at=datetime.now(UTC),
            model_id=model_id,
            sae_id=sae_id,
            feature=feature,
            kind=kind,
            text=text,
            author=author,
            owner_hash=owner_hash,
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        self._bump()
        return _note(row), secret

    def note(self, note_id: str) -> Note | None:
        with Session(self.engine) as session:
            row = session.get(NoteRow, note_id)
            return _note(row) if row else None

    def edit_note(self, note_id: str, secret: str | None, text: str, kind: str, author: str) -> Note | None:
        """The note with its text, kind and author replaced (None: no such note; NotOwner: not its secret)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            row = session.get(NoteRow, note_id)
            if row is None:
                return None
            check(row.owner_hash, secret, "note")
            row.text, row.kind, row.author, row.edited_at = text, kind, author, datetime.now(UTC)
        self._bump()
        return _note(row)

    def delete_note(self, note_id: str, secret: str | None) -> bool:
        """Whether there was such a note (NotOwner: not its secret)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(NoteRow, note_id)
            if row is None:
                return False
            check(row.owner_hash, secret, "note")
            session.delete(row)
        self._bump()
        return True

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
        """Changes whenever a note is added, edited or deleted (any process)."""
        with Session(self.engine) as session:
            n, last, edited = session.execute(
                select(func.count(NoteRow.id), func.max(NoteRow.created_at), func.max(NoteRow.edited_at))
            ).one()
        return f"{n}-{last}-{edited}"

    def create_list(self, name: str, description: str, items: list[ListItem]) -> tuple[UserList, str]:
        """The list made, and its owner secret (the only time it is known)."""
        list_id, (secret, owner_hash) = secrets.token_urlsafe(8), new_secret()
        with Session(self.engine) as session, session.begin():
            row = ListRow(
                id=list_id, created_at=datetime.now(UTC), name=name, description=description, owner_hash=owner_hash
            )
            session.add(row)
            session.flush()
            session.add_all(_item_rows(list_id, 0, items))
        self._bump()
        found = self.get_list(list_id)
        assert found is not None
        return found, secret

    def add_item(self, list_id: str, item: ListItem, secret: str | None) -> UserList | None:
        """The list with `item` added at its end (None: no such list; NotOwner: not its secret)."""
        with Session(self.engine) as session, session.begin():
            # the list's row is written first: its lock (SQLite: the database's write lock) holds a second add to
            # the same list until this one commits, so that one reads the position after this one's
            same_name = update(ListRow).where(ListRow.id == list_id).values(name=ListRow.name)
            touched = session.connection().execute(same_name)
            row = session.get(ListRow, list_id)
            if touched.rowcount == 0 or row is None:
                return None
            check(row.owner_hash, secret, "list")
            last = session.scalar(select(func.max(ItemRow.position)).where(ItemRow.list_id == list_id))
            session.add_all(_item_rows(list_id, (last if last is not None else -1) + 1, [item]))
        self._bump()
        return self.get_list(list_id)

    def edit_list(self, list_id: str, secret: str | None, name: str, description: str) -> UserList | None:
        """The list renamed and described anew (None: no such list; NotOwner: not its secret)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ListRow, list_id)
            if row is None:
                return None
            check(row.owner_hash, secret, "list")
            row.name, row.description, row.edited_at = name, description, datetime.now(UTC)
        self._bump()
        return self.get_list(list_id)

    def delete_list(self, list_id: str, secret: str | None) -> bool:
        """Whether there was such a list (deleted with its items; NotOwner: not its secret)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ListRow, list_id)
            if row is None:
                return False
            check(row.owner_hash, secret, "list")
            session.execute(delete(ItemRow).where(ItemRow.list_id == list_id))
            session.delete(row)
        self._bump()
        return True

    def get_list(self, list_id: str) -> UserList | None:
        with Session(self.engine) as session:
            row = session.get(ListRow, list_id)
            if row is None:
                return None
            q = select(ItemRow).where(ItemRow.list_id == list_id).order_by(ItemRow.position)
            return _list(row, [ListItem(i.model_id, i.sae_id, i.feature, i.note) for i in session.scalars(q)])

    def lists(self, limit: int | None = None, offset: int = 0) -> list[UserList]:
        """The lists (all, or `limit` of them from `offset`), newest first, without their items."""
        q = select(ListRow).order_by(ListRow.created_at.desc(), ListRow.id).offset(offset).limit(limit)
        with Session(self.engine) as session:
            return [_list(r) for r in session.scalars(q)]

    def count_lists(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count(ListRow.id))) or 0

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
            return [_list(r) for r in session.scalars(q)]

    def search(self, q: str, limit: int = 30) -> tuple[list[Note], list[UserList]]:
        """Notes and lists whose text (a list: name, description or a feature's note) holds every word of q.

        A first cut in SQL on a few distinct words (SQLite refuses an expression of ~1,000 terms, and a long query
        is easy to send), at most SEARCH_ROWS rows of each; `matches` then checks every word, and word starts only.
        Three queries in all, however many lists there are."""
        words = list(dict.fromkeys(_words(q)))[:SQL_WORDS]
        if not words:
            return [], []
        note_q = select(NoteRow).where(*(_contains(NoteRow.text, w) for w in words))
        has_word = [
            or_(
                _contains(ListRow.name, w),
                _contains(ListRow.description, w),
                exists().where(ItemRow.list_id == ListRow.id, _contains(ItemRow.note, w)),
            )
            for w in words
        ]
        list_q = select(ListRow).where(*has_word).order_by(ListRow.created_at.desc()).limit(SEARCH_ROWS)
        with Session(self.engine) as session:
            rows = session.scalars(note_q.order_by(NoteRow.created_at.desc()).limit(SEARCH_ROWS)).all()
            notes = sorted((_note(r) for r in rows if matches(q, r.text)), key=lambda n: n.created_at)[:limit]
            candidates = session.scalars(list_q).all()
            item_notes: dict[str, list[str]] = {}
            ids = [r.id for r in candidates]
            for list_id, note in session.execute(select(ItemRow.list_id, ItemRow.note).where(ItemRow.list_id.in_(ids))):
                item_notes.setdefault(list_id, []).append(note)
        found = [
            _list(r) for r in candidates if matches(q, " ".join([r.name, r.description, *item_notes.get(r.id, [])]))
        ]
        return notes, found[:limit]

    def close(self) -> None:
        self.engine.dispose()


def _item_rows(list_id: str, first: int, items: list[ListItem]) -> list[ItemRow]:
    return [
        ItemRow(
            list_id=list_id,
            position=first + i,
            model_id=it.model_id,
            sae_id=it.sae_id,
            feature=it.feature,
            note=it.note,
        )
        for i, it in enumerate(items)
    ]
