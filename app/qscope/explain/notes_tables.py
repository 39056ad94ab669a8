"""The app database's tables of people's notes and lists (SQLAlchemy; qscope.explain.notes reads and writes them).

`owner_hash` is the SHA-256 (hex) of the owner secret (qscope.explain.owners); None on rows written before owners
existed, which nobody can change. `edited_at` is None until the first edit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from qscope.appdb import Base


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
    owner_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 hex; None: written before
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ListRow(Base):
    __tablename__ = "feature_lists"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # pages of /lists
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    owner_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 hex; None: written before
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ItemRow(Base):
    __tablename__ = "feature_list_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list_id: Mapped[str] = mapped_column(ForeignKey("feature_lists.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(200))
    sae_id: Mapped[str] = mapped_column(String(300))
    feature: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text)
