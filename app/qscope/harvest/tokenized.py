"""Pre-tokenized corpora: windows of token ids, harvested as they are (no tokenizer, no re-windowing).

People who harvest with SAELens keep their datasets as token ids; reading the same windows lets two tools be
compared on exactly the same tokens. A pre-tokenized corpus is one of:

- a ``.npy`` or ``.pt`` file holding one integer array [windows, tokens];
- a ``.parquet`` file, or a folder of them (a Hugging Face dataset as the hub stores it), with an ``input_ids``
  or ``tokens`` column of integer lists, one window per row, all of one length (read with DuckDB);
- a folder written by ``datasets.Dataset.save_to_disk`` (``*.arrow`` files; read with pyarrow when installed).

Windows are taken in order, as many as the harvest needs; each must be ``--ctx`` tokens long (the error says
the length to pass), and every id must be below the model's vocabulary size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qscope.harvest.corpus import CorpusError

COLUMNS = ("input_ids", "tokens")
ARRAY_SUFFIXES = (".npy", ".pt")


def is_tokenized(source: str | Path) -> bool:
    """Whether a corpus source is pre-tokenized (see the module docstring); text corpora answer False."""
    path = Path(source).expanduser()
    if path.is_file():
        return path.suffix in ARRAY_SUFFIXES or (path.suffix == ".parquet" and _token_column([path]) is not None)
    if path.is_dir():
        if _arrow_files(path):
            return True
        parquet = sorted(path.rglob("*.parquet"))
        return bool(parquet) and _token_column(parquet[:1]) is not None
    return False


def load_windows(source: str | Path, ctx: int, max_windows: int, vocab_size: int | None) -> Tensor:
    """int32 [N, ctx], N <= max_windows: the first windows of the corpus, checked against the vocabulary (when
    vocab_size is given; else call check_vocab once the model is known)."""
    path = Path(source).expanduser()
    if path.suffix in ARRAY_SUFFIXES and path.is_file():
        windows = _read_array(path)
    elif path.is_dir() and _arrow_files(path):
        windows = _read_arrow(path, max_windows)
    else:
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        windows = _read_parquet(path, files, ctx, max_windows)
    if windows.ndim != 2 or windows.shape[0] == 0:
        raise CorpusError(f"corpus {path}: expected windows of token ids [windows, tokens], got shape {windows.shape}")
    if windows.shape[1] != ctx:
        raise CorpusError(
            f"corpus {path} holds windows of {windows.shape[1]} tokens: pass --ctx {windows.shape[1]} to harvest them "
            "as they are"
        )
    windows = windows[:max_windows]
    if vocab_size is not None:
        check_vocab(path, windows, vocab_size)
    if int(windows.max()) >= 2**31:
        raise CorpusError(f"corpus {path} holds token id {int(windows.max())}, past any vocabulary")
    return torch.from_numpy(np.array(windows, dtype=np.int32))  # a copy: the file may be memory-mapped


def check_vocab(path: str | Path, windows: np.ndarray, vocab_size: int) -> None:
    """CorpusError unless every id is in [0, vocab_size)."""
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise CorpusError(
            f"corpus {path} holds token id {bad}, outside the model's vocabulary of {vocab_size:,} ids "
            f"(0..{vocab_size - 1:,}): was it tokenized for another model?"
        )


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file fails anywhere from ValueError to UnpicklingError
        raise CorpusError(f"cannot read token windows from {path}: {e}") from e
    if isinstance(data, Tensor):
        if data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
            raise CorpusError(f"corpus {path} holds {data.dtype} values; token ids must be integers")
        return data.numpy()
    if not isinstance(data, np.ndarray):
        raise CorpusError(f"corpus {path} holds a {type(data).__name__}; expected one array of token ids")
    if not np.issubdtype(data.dtype, np.integer):
        raise CorpusError(f"corpus {path} holds {data.dtype} values; token ids must be integers")
    return data


def _token_column(files: list[Path]) -> str | None:
    """The token column (input_ids or tokens) of the first parquet file, or None."""
    import duckdb

    try:
        con = duckdb.connect()
        try:
            cols = {
                r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(files[0])]).fetchall()
            }
        finally:
            con.close()
    except duckdb.Error:
        return None
    return next((c for c in COLUMNS if c in cols and "[]" in cols[c] and "INT" in cols[c].upper()), None)


def _read_parquet(path: Path, files: list[Path], ctx: int, max_windows: int) -> np.ndarray:
    import duckdb

    if not files:
        raise CorpusError(f"corpus folder {path} holds no .parquet files")
    column = _token_column(files)
    if column is None:
        raise CorpusError(f"corpus {path}: no {' or '.join(COLUMNS)} column of integer lists in {files[0].name}")
    names = [str(f) for f in files]
    con = duckdb.connect()
    try:
        lengths = con.execute(
            f"SELECT min(len({column})), max(len({column})) FROM (SELECT {column} FROM read_parquet(?) LIMIT ?)",
            [names, max_windows],
        ).fetchone()
        assert lengths is not None, "an aggregate gives one row"
        if lengths[0] != lengths[1]:
            raise CorpusError(
                f"corpus {path}: rows of {lengths[0]} to {lengths[1]} tokens; a pre-tokenized corpus holds windows "
                "of one length"
            )
        # file order, then row order (DuckDB keeps insertion order), each row's ids in order
        flat = con.execute(
            f"SELECT unnest({column}) AS t FROM (SELECT {column} FROM read_parquet(?) LIMIT ?)", [names, max_windows]
        ).fetchnumpy()["t"]
    except duckdb.Error as e:
        raise CorpusError(f"cannot read token windows from {path}: {e}") from e
    finally:
        con.close()
    return np.asarray(flat).reshape(-1, int(lengths[0]))


def _arrow_files(path: Path) -> list[Path]:
    """The data files of a save_to_disk folder (its state.json lists them), else []."""
    import json

    state = path / "state.json"
    if not state.is_file():
        return []
    try:
        names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    except (ValueError, KeyError, TypeError):
        return []
    return [path / n for n in names]


def _read_arrow(path: Path, max_windows: int) -> np.ndarray:
    try:
        import pyarrow as pa
    except ImportError as e:
        raise CorpusError(
            f"corpus {path} is a Hugging Face dataset saved with save_to_disk (Arrow files); install pyarrow to read "
            "it, or export it as parquet (dataset.to_parquet)"
        ) from e
    rows: list[list[int]] = []
    for file in _arrow_files(path):
        with pa.memory_map(str(file)) as source:
            table = pa.ipc.open_stream(source).read_all()
        column = next((c for c in COLUMNS if c in table.column_names), None)
        if column is None:
            raise CorpusError(f"corpus {path}: no {' or '.join(COLUMNS)} column in {file.name}")
        rows += table.column(column).to_pylist()[: max_windows - len(rows)]
        if len(rows) >= max_windows:
            break
    if len({len(r) for r in rows}) > 1:
        raise CorpusError(
            f"corpus {path}: rows of different lengths; a pre-tokenized corpus holds windows of one length"
        )
    return np.array(rows, dtype=np.int64)
