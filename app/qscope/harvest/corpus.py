"""The harvest's corpus: documents from a source, tokenized and packed into windows int32 [N, ctx].

A source is a file or a folder (searched recursively, hidden entries skipped, files in sorted order) of
``.txt`` (one document per file), ``.jsonl`` (a ``text`` field per line) or ``.parquet`` (a ``text`` column;
read with pyarrow when installed, else with DuckDB), or the name of a Hugging Face dataset, streamed when the
machine is online and the optional ``datasets`` package is installed. Documents are joined by the tokenizer's
end-of-text token (Qwen has no BOS) and cut into windows of ``ctx`` tokens; only as many documents are read and
tokenized as the windows need. A document is tokenized in bounded pieces (qscope.harvest.pieces) and a large
`.txt` file is read block by block, so memory does not grow with the length of one document.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from qscope.harvest.jsonl import read_jsonl
from qscope.harvest.pieces import CorpusError, Document, TextFile, content_pieces

SUFFIXES = (".txt", ".jsonl", ".parquet")
STREAM_BYTES = 1 << 20  # a .txt file larger than this is read block by block
BATCH_CHARS = 1 << 18  # characters per tokenizer call
_DATASET_RE = re.compile(r"[\w-][\w.-]*(/[\w.-]+)?")
_OFFLINE = {"1", "ON", "YES", "TRUE"}


def corpus_files(path: Path) -> list[Path]:
    """The readable files of a corpus path (itself, or those in the folder and below)."""
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise CorpusError(f"corpus file {path} is not .txt, .jsonl or .parquet")
        return [path]
    found = sorted(
        f
        for f in path.rglob("*")
        if f.suffix in SUFFIXES and f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
    )
    if not found:
        raise CorpusError(f"corpus folder {path} holds no .txt, .jsonl or .parquet files")
    return found


def iter_documents(source: str | Path) -> Iterator[Document]:
    """Every document of a corpus source, in a fixed order."""
    path = Path(source).expanduser()
    if path.exists():
        for file in corpus_files(path):
            yield from _read_file(file)
        return
    name = str(source)
    if isinstance(source, Path) or name.startswith((".", "/", "~")) or Path(name).suffix in SUFFIXES:
        raise CorpusError(f"corpus not found: {name}")
    if not _DATASET_RE.fullmatch(name):
        raise CorpusError(f"corpus {name!r} is neither a file, a folder nor a Hugging Face dataset name")
    yield from _stream_dataset(name)


def _read_file(file: Path) -> Iterator[Document]:
    if file.suffix == ".txt":
        big = file.stat().st_size > STREAM_BYTES
        yield TextFile(file) if big else file.read_text(encoding="utf-8", errors="replace")
    elif file.suffix == ".jsonl":
        yield from read_jsonl(file)
    else:
        yield from _read_parquet(file)


def _read_parquet(file: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        yield from _read_parquet_duckdb(file)
        return
    try:
        pf = pq.ParquetFile(file)
    except Exception as e:  # pyarrow raises its own error types for a damaged file
        raise CorpusError(f"cannot read parquet file {file}: {e}") from e
    if "text" not in pf.schema_arrow.names:
        raise CorpusError(f"parquet file {file} has no 'text' column (columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))


def _read_parquet_duckdb(file: Path) -> Iterator[str]:
    import duckdb

    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(file)]).fetchall()]
        if "text" not in cols:
            raise CorpusError(f"parquet file {file} has no 'text' column (columns: {cols})")
        cur = con.execute("SELECT text FROM read_parquet(?) WHERE text IS NOT NULL", [str(file)])
        while rows := cur.fetchmany(1024):
            yield from (r[0] for r in rows)
    except duckdb.Error as e:
        raise CorpusError(f"cannot read parquet file {file}: {e}") from e
    finally:
        con.close()


def _stream_dataset(name: str) -> Iterator[str]:
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "").upper() in _OFFLINE]
    if offline:
        raise CorpusError(f"corpus {name!r} is not a local file or folder, and {offline[0]} is set")
    try:
        import datasets
    except ImportError as e:
        raise CorpusError(
            f"corpus {name!r} is not a local file or folder; to stream it from the Hugging Face hub, "
            "install the optional package `datasets`"
        ) from e
    try:
        rows = datasets.load_dataset(name, split="train", streaming=True)
        for row in rows:
            if isinstance(row.get("text"), str):
                yield row["text"]
    except Exception as e:  # network, missing dataset or missing column all surface here
        raise CorpusError(f"cannot stream dataset {name!r} from the Hugging Face hub: {e}") from e


def _pieces(docs: Iterable[Document]) -> Iterator[tuple[str, bool, bool]]:
    """(piece, first of its document, last of its document) for every piece of every non-blank document."""
    for doc in docs:
        prev, first = None, True
        for piece in content_pieces(doc):
            if prev is not None:
                yield prev, first, False
                first = False
            prev = piece
        if prev is not None:
            yield prev, first, True


def pack_windows(
    tokenizer: PreTrainedTokenizerBase,
    docs: Iterable[Document],
    ctx: int,
    max_windows: int,
    docs_per_call: int = 256,
) -> Tensor:
    """Token windows int32 [N, ctx], N <= max_windows: documents joined by end-of-text, the tail dropped. Each
    tokenizer call takes at most docs_per_call pieces and about BATCH_CHARS characters."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    tail = [eos] if eos is not None else []
    need = ctx * max_windows
    parts: list[np.ndarray] = []
    have, n_docs, chars = 0, 0, 0
    batch: list[str] = []
    ends: list[bool] = []

    def flush() -> int:
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
        seqs = zip(ids["input_ids"], ends, strict=True)
        arrays = [np.asarray(seq + tail if end else seq, dtype=np.int32) for seq, end in seqs]
        parts.extend(arrays)
        batch.clear()
        ends.clear()
        return sum(len(a) for a in arrays)

    for piece, first, last in _pieces(docs):
        batch.append(piece)
        ends.append(last)
        n_docs += first
        chars += len(piece)
        if len(batch) >= docs_per_call or chars >= BATCH_CHARS:
            have, chars = have + flush(), 0
            if have >= need:
                break
    if batch:
        have += flush()
    if n_docs == 0:
        raise CorpusError("the corpus is empty: it holds no text")
    n = min(have // ctx, max_windows)
    if n == 0:
        raise CorpusError(f"the corpus holds only {have} tokens, fewer than one window of --ctx {ctx}")
    stream = np.concatenate(parts)[: n * ctx]
    return torch.from_numpy(stream).view(n, ctx)
