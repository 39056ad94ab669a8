"""Draft the next revision of the app database from the table models (Alembic's autogenerate), to read and edit
by hand before it is committed (docs/app-db.md says what to check):

    PYTHONPATH=app python scripts/new_app_db_revision.py "owner secrets on notes and lists"

It upgrades a scratch SQLite database to the newest revision there is, compares it with every model on
qscope.appdb.Base, and writes app/qscope/appdb/migrations/versions/NNNN_<message>.py (NNNN: the next number).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

# every module that declares tables on Base: a model left out here would be drafted as a table to drop
import qscope.discover.store  # noqa: F401
import qscope.explain.notes_tables  # noqa: F401
import qscope.steer.evaluate.recipes  # noqa: F401
import qscope.steer.runs  # noqa: F401
from qscope.appdb import Base, make_engine
from qscope.appdb.migrate import config, head


def main(message: str) -> None:
    rev_id = f"{int(head()) + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        with engine.begin() as conn:
            cfg = config(conn)
            cfg.attributes["target_metadata"] = Base.metadata
            command.upgrade(cfg, "head")
            command.revision(cfg, message, autogenerate=True, rev_id=rev_id)
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
