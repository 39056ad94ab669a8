"""Fixtures of the steering tests: mini-Qwen with its last layer's SAE, and the tiny default as an evaluation
target (its live model and SAEs)."""

import pytest

from qscope.live.runner import LiveModels
from qscope.model import load_model
from qscope.sae import load_sae
from qscope.steer.evaluate.target import from_live
from qscope.store.queries import Store


@pytest.fixture(scope="module")
def target(tiny_db, one_torch_thread):
    """The tiny default's first model, loaded on the CPU, as steer-eval runs on it (one per test module)."""
    store = Store(tiny_db)
    yield from_live(LiveModels([store], device="cpu").get(store.model_ids[0]))
    store.close()


@pytest.fixture(scope="module")
def tiny(tiny_demo, one_torch_thread):
    """mini-Qwen and its last layer's SAE (its edits reach the logits directly), on one torch thread."""
    return load_model(tiny_demo / "model", device="cpu"), load_sae(tiny_demo / "saes", layer=1)
