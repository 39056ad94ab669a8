"""Search never makes pages wait: a query waits for one batch of an index build, not for the whole build
(app/qscope/search/embedder.py holds the model a batch at a time), and searches run on threads of their own, at most
Settings.search_threads at once (app/qscope/web/routes/search.py), so that many slow searches at once leave the threads
that serve feature pages free. Real embedder, real store, real app; a search is made slow by holding the
embedder while it waits, as an index build holds it."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.search.embedder import Embedder
from qscope.web import create_app
from tests.helpers.timing import wait_until


def test_a_query_waits_for_one_batch_of_a_build_not_the_whole_build():
    embedder = Embedder()
    first_batch, go = threading.Event(), threading.Event()

    def paused(done: int) -> None:  # the build stops after its first batch until the query has been answered
        first_batch.set()
        go.wait(60)

    build = threading.Thread(target=embedder.embed, args=([f"text {i}" for i in range(40)], 8, paused))
    build.start()
    try:
        assert first_batch.wait(120)
        answered: list[np.ndarray] = []
        query = threading.Thread(target=lambda: answered.append(embedder.embed(["a query"])))
        query.start()
        query.join(30)
        assert answered and answered[0].shape == (1, 384), "the query waited for the rest of the build"
    finally:
        go.set()
        build.join(120)


def searching(client: TestClient) -> int:
    """Searches on a search thread or waiting for one (the limiter is read on the app's event loop, its home)."""
    stats = client.portal.call(client.app.state.search_limiter.statistics)
    return stats.borrowed_tokens + stats.tasks_waiting


def test_many_slow_searches_leave_feature_pages_free(tiny_db, tmp_path):
    settings = Settings(device="cpu", cache_dir=tmp_path / "cache", search_threads=2, rate_inspect_per_min=0)
    app = create_app([tiny_db], settings, warm_search=False)
    served = next(iter(app.state.catalog))
    feature_page = f"/{served.model_id}/{served.saes[0].sae.sae_id}/0"
    searcher = app.state.searcher
    with TestClient(app) as client, ThreadPoolExecutor(60) as pool:
        assert client.get("/search", params={"q": "warm", "kind": "semantic"}).status_code == 200  # loads the model
        with searcher.embedder._lock:  # every query embedding now waits, as behind an index build's batch
            searches = [
                pool.submit(client.get, "/search", params={"q": f"query {i}", "kind": "semantic"}) for i in range(50)
            ]
            wait_until(lambda: searching(client) == len(searches))  # the searches are all in
            start = time.monotonic()
            page = pool.submit(client.get, feature_page).result(timeout=30)
            took = time.monotonic() - start
            assert page.status_code == 200 and not all(s.done() for s in searches)
        assert all(s.result(timeout=120).status_code == 200 for s in searches)
    assert took < 10, f"the feature page waited {took:.1f} s behind searches"
