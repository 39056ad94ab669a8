"""Fixtures of the steering tests: the tiny default as an evaluation target (its live model and SAEs)."""

import pytest

from qscope.live.runner import LiveModels
from qscope.steer.evaluate.target import from_live
from qscope.store.queries import Store


@pytest.fixture(scope="module")
def target(tiny_db, one_torch_thread):
    """The tiny default's first model, loaded on the CPU, as steer-eval runs on it (one per test module)."""
    store = Store(tiny_db)
    yield from_live(LiveModels([store], device="cpu").get(store.model_ids[0]))
    store.close()
