"""Corpus for mini-Qwen: real text that any machine has, gathered offline and deterministically.

Sources, each used when present:
- ``stdlib``: the running interpreter's standard library sources (code, docstrings, comments);
- ``python-doc``: the reStructuredText sources of the Python docs (Debian ``python3.11-doc``);
- ``fortunes``: Debian ``fortunes`` (short quotes and jokes);
- ``jargon``: the Jargon File (Debian ``jargon-text``).

Documents are shuffled with a fixed seed and split into train / validation; both are written as JSON
lines with a ``text`` field (the format the harvest reads), plus a manifest of what went in.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

PYTHON_DOC_DIRS = [
    Path("/usr/share/doc/python3.11/html/_sources"),
    Path("/usr/share/doc/python3-doc/html/_sources"),
]
FORTUNES_DIR = Path("/usr/share/games/fortunes")
JARGON_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
MAX_DOC_CHARS = 6000  # long files are cut into pieces of about this size, on line boundaries


@dataclass
class CorpusManifest:
    """What a built corpus holds: chars and docs per source, the split, and a content hash."""

    sources: dict[str, dict[str, int]]
    train_docs: int
    val_docs: int
    train_chars: int
    val_chars: int
    sha256: str


def _pieces(text: str, limit: int = MAX_DOC_CHARS) -> Iterator[str]:
    """Cut a long text into pieces of at most ``limit`` chars on line boundaries."""
    buf: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        if size + len(line) > limit and buf:
            yield "".join(buf)
            buf, size = [], 0
        buf.append(line[:limit])
        size += len(line[:limit])
    if buf:
        yield "".join(buf)


def stdlib_docs() -> Iterator[str]:
    """The interpreter's own standard library sources, test suites and site-packages left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo"}
    for path in sorted(root.rglob("*.py")):
        if skip.intersection(path.relative_to(root).parts):
            continue
        yield from _pieces(path.read_text(encoding="utf-8", errors="replace"))


def python_doc_docs() -> Iterator[str]:
    for base in PYTHON_DOC_DIRS:
        if base.is_dir():
            for path in sorted(base.rglob("*.txt")):
                yield from _pieces(path.read_text(encoding="utf-8", errors="replace"))
            return


def fortunes_docs() -> Iterator[str]:
    if not FORTUNES_DIR.is_dir():
        return
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or not path.is_file():  # skip the .dat indexes and .u8 links
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for quote in re.split(r"^%\s*$", text, flags=re.M):
            if quote.strip():
                yield quote.strip("\n") + "\n"


def jargon_docs() -> Iterator[str]:
    if not JARGON_FILE.is_file():
        return
    text = gzip.decompress(JARGON_FILE.read_bytes()).decode("utf-8", errors="replace")
    yield from _pieces(text, 2000)


SOURCES = {
    "stdlib": stdlib_docs,
    "python-doc": python_doc_docs,
    "fortunes": fortunes_docs,
    "jargon": jargon_docs,
}


def gather(max_chars: int, seed: int = 0, val_fraction: float = 0.05) -> tuple[list[str], list[str], dict]:
    """Pick documents from every available source (an equal share of ``max_chars`` each, code and prose
    balanced) and split them into (train, val, per-source counts)."""
    rng = random.Random(seed)
    available = {name: list(fn()) for name, fn in SOURCES.items()}
    available = {name: docs for name, docs in available.items() if docs}
    share = max_chars // max(len(available), 1)
    picked: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for name, docs in available.items():
        rng.shuffle(docs)
        taken, chars = [], 0
        for doc in docs:
            if chars >= share:
                break
            taken.append(doc)
            chars += len(doc)
        counts[name] = {"docs": len(taken), "chars": chars, "available_docs": len(docs)}
        picked.extend(taken)
    rng.shuffle(picked)
    n_val = max(1, int(len(picked) * val_fraction))
    return picked[n_val:], picked[:n_val], counts


def write_corpus(out_dir: Path, max_chars: int, seed: int = 0) -> CorpusManifest:
    """Write ``train.jsonl``, ``val.jsonl`` and ``manifest.json`` under ``out_dir``."""
    train, val, counts = gather(max_chars, seed)
    if not train:
        raise RuntimeError("no corpus text found: not even the Python standard library sources")
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    for split, docs in (("train", train), ("val", val)):
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for doc in docs:
                line = json.dumps({"text": doc}, ensure_ascii=False)
                digest.update(line.encode())
                fh.write(line + "\n")
    manifest = CorpusManifest(
        sources=counts,
        train_docs=len(train),
        val_docs=len(val),
        train_chars=sum(map(len, train)),
        val_chars=sum(map(len, val)),
        sha256=digest.hexdigest(),
    )
    (out_dir / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


def read_texts(path: Path) -> list[str]:
    """The ``text`` field of every line of a JSON-lines file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]
