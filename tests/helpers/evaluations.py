"""What the steering-evaluation tests share: the Identity a test evaluation records (no real versions: a test
compares results, never where they came from)."""

from qscope.steer.evaluate.result import Identity

IDENT = Identity(
    model_id="tiny",
    model=[],
    saes=[],
    store=None,
    qscope_version="test",
    torch_version="",
    transformers_version="",
    device="cpu",
    dtype="float32",
)
