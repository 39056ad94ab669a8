"""Fixtures of the end-to-end tests: the harvested tiny default served by `qscope serve`, and a browser page on it
(used by name by the browser test modules)."""

import pytest

from tests.helpers.browser import chromium, watch_problems
from tests.helpers.server import serving


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    with serving(tiny_db, tmp_path_factory) as base:
        yield base


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": 1360, "height": 900})
        pg.set_default_timeout(90_000)  # the first search builds the semantic index, the first inspect loads the model
        problems = watch_problems(pg)
        pg.on("request", lambda r: None if r.url.startswith(server) else problems.append(f"left the server: {r.url}"))
        yield pg
