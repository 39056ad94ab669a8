"""A real old app database: what qscope at commit 09f5f29 (before migrations) wrote, made by
tests/data/make_app_db.py, and the list of what was made in it."""

import json

from tests.helpers import ROOT

OLD = ROOT / "tests" / "data" / "app-db-09f5f29.sqlite"
MADE = json.loads((ROOT / "tests" / "data" / "app-db-09f5f29.json").read_text())
