"""Harvests of the tiny build (tests/conftest.py's tiny_demo): its options in Python, and its arguments on the
command line (`qscope harvest`), each with the model, SAEs and validation corpus of the build."""

from pathlib import Path
from typing import Any

from qscope.harvest.options import HarvestOptions


def demo_options(demo: Path, out: Path, **kw: Any) -> HarvestOptions:
    """A CPU float32 harvest of the build's validation split into `out`, without checkpoints; `kw` on top."""
    return HarvestOptions(
        model=str(demo / "model"),
        saes=[demo / "saes"],
        corpus=str(demo / "corpus" / "val.jsonl"),
        out=out,
        device="cpu",
        dtype="float32",
        checkpoint_every=0,
        **kw,
    )


def demo_harvest_args(demo: Path, out: Path, corpus: Path | None = None) -> list[str]:
    """`qscope harvest`'s arguments for the build's model and SAEs into `out`, on `corpus` (default: the build's
    validation split); a caller adds its own sizes and options after them."""
    corpus = corpus or demo / "corpus" / "val.jsonl"
    return [
        "harvest",
        "--model",
        str(demo / "model"),
        "--sae",
        str(demo / "saes"),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
    ]
