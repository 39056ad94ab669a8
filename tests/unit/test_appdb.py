"""The app database opened by qscope.appdb: a file database gets its folder, and an in-memory one is the same
database in every thread (the server reads and writes it from worker threads)."""

import threading

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from qscope.appdb import open_app_db


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(20))


def test_in_memory_database_is_one_database_across_threads():
    engine = open_app_db("sqlite://", Base.metadata)
    with Session(engine) as s:
        s.add(Row(id=1, text="written here"))
        s.commit()
    seen: list = []

    def read() -> None:
        with Session(engine) as s:
            seen.extend(s.scalars(select(Row.text)).all())

    t = threading.Thread(target=read)
    t.start()
    t.join()
    assert seen == ["written here"]


def test_file_database_gets_its_folder(tmp_path):
    engine = open_app_db(f"sqlite:///{tmp_path}/a/b/app.db", Base.metadata)
    with Session(engine) as s:
        s.add(Row(id=2, text="kept"))
        s.commit()
    assert (tmp_path / "a" / "b" / "app.db").is_file()
    with Session(open_app_db(f"sqlite:///{tmp_path}/a/b/app.db", Base.metadata)) as s:
        assert s.scalars(select(Row.text)).all() == ["kept"]
