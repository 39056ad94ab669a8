"""Fixtures of the end-to-end tests: the harvested tiny default served by `qscope serve`, and a browser page on it
(used by name by the browser test modules)."""

import pytest

from tests.helpers.browser import ARGS, ARTIFACTS, CHROMIUM, sync_api
from tests.helpers.server import serving


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    with serving(tiny_db, tmp_path_factory) as base:
        yield base


@pytest.fixture(scope="module")
def page(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = browser.new_page(viewport={"width": 1360, "height": 900})
        pg.set_default_timeout(90_000)  # the first search builds the semantic index, the first inspect loads the model
        problems: list[str] = []
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        pg.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        pg.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        pg.on("request", lambda r: None if r.url.startswith(server) else problems.append(f"left the server: {r.url}"))
        pg.problems = problems
        yield pg
        browser.close()
