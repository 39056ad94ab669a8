"""Pre-tokenized corpora (qscope.harvest.tokenized): .npy, .pt, parquet files and folders, a save_to_disk folder;
windows taken as they are, checked against the vocabulary, and every bad case a one-line error."""

import json
from dataclasses import replace

import duckdb
import numpy as np
import pytest
import torch

from qscope.harvest.corpus import CorpusError
from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.run import prepare
from qscope.harvest.tokenized import is_tokenized, load_windows

WINDOWS = np.arange(5 * 8, dtype=np.int64).reshape(5, 8) % 97


def write_parquet(path, rows, column="input_ids"):
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM (VALUES {', '.join(f'({r!r})' for r in rows)}) v({column})")
    con.execute("COPY t TO ? (FORMAT parquet)", [str(path)])
    con.close()


@pytest.fixture
def sources(tmp_path):
    np.save(tmp_path / "w.npy", WINDOWS.astype(np.int32))
    torch.save(torch.from_numpy(WINDOWS), tmp_path / "w.pt")
    write_parquet(tmp_path / "w.parquet", WINDOWS.tolist())
    hub = tmp_path / "hub" / "data"  # a Hugging Face dataset as the hub stores it: parquet shards
    hub.mkdir(parents=True)
    write_parquet(hub / "train-00000-of-00002.parquet", WINDOWS[:3].tolist(), "tokens")
    write_parquet(hub / "train-00001-of-00002.parquet", WINDOWS[3:].tolist(), "tokens")
    return {k: tmp_path / v for k, v in {"npy": "w.npy", "pt": "w.pt", "parquet": "w.parquet", "hub": "hub"}.items()}


@pytest.mark.parametrize("kind", ["npy", "pt", "parquet", "hub"])
def test_every_format_gives_the_windows_as_they_are(sources, kind):
    assert is_tokenized(sources[kind])
    got = load_windows(sources[kind], ctx=8, max_windows=100, vocab_size=97)
    assert got.dtype == torch.int32 and np.array_equal(got.numpy(), WINDOWS)
    assert np.array_equal(load_windows(sources[kind], 8, 2, 97).numpy(), WINDOWS[:2])  # only what is needed


def test_text_corpora_are_not_taken_for_token_ids(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    write_parquet(tmp_path / "t.parquet", ["some text"], "text")
    assert not is_tokenized(tmp_path / "a.jsonl") and not is_tokenized(tmp_path / "t.parquet")
    assert not is_tokenized(tmp_path) and not is_tokenized("some/hub-name")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p / "x.npy", WINDOWS.astype(np.float32)), "token ids must be integers"),
        (lambda p: np.save(p / "x.npy", WINDOWS.reshape(5, 2, 4)), "expected windows of token ids"),
        (lambda p: np.save(p / "x.npy", WINDOWS[:, :6]), "windows of 6 tokens: pass --ctx 6"),
        (lambda p: np.save(p / "x.npy", WINDOWS + 58), "token id 97, outside the model's vocabulary of 97 ids"),
        (lambda p: np.save(p / "x.npy", WINDOWS - 1), "token id -1, outside"),
        (lambda p: torch.save({"ids": torch.from_numpy(WINDOWS)}, p / "x.pt"), "holds a dict"),
        (lambda p: (p / "x.pt").write_bytes(b"not a torch file"), "cannot read token windows"),
        (lambda p: write_parquet(p / "x.parquet", [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2]]), "rows of 2 to 8 tokens"),
    ],
)
def test_bad_windows_are_one_line_errors(tmp_path, make, message):
    make(tmp_path)
    (source,) = [f for f in tmp_path.iterdir()]
    with pytest.raises(CorpusError, match=message.replace("(", r"\(")):
        load_windows(source, 8, 100, 97)


def test_a_save_to_disk_folder_without_pyarrow_says_what_to_do(tmp_path):
    (tmp_path / "data-00000-of-00001.arrow").write_bytes(b"")
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    assert is_tokenized(tmp_path)
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # pyarrow is optional: without it the error says what to do
        with pytest.raises(CorpusError, match="install pyarrow to read it, or export it as parquet"):
            load_windows(tmp_path, 8, 10, 97)
    else:  # with it, an empty Arrow file is a damaged corpus, reported as one
        with pytest.raises((CorpusError, OSError, ValueError)):
            load_windows(tmp_path, 8, 10, 97)


def test_the_harvest_takes_the_same_windows_from_token_ids(tiny_demo, tmp_path):
    """The windows a text harvest packs, saved as token ids and harvested again, are taken unchanged; ids past
    the model's vocabulary stop the harvest before anything runs."""
    text = HarvestOptions(
        model=str(tiny_demo / "model"),
        saes=[tiny_demo / "saes"],
        corpus=str(tiny_demo / "corpus" / "val.jsonl"),
        out=tmp_path / "x.duckdb",
        tokens=1024,
        ctx=64,
        device="cpu",
    )
    windows = prepare(text).windows_NT
    np.save(tmp_path / "ids.npy", windows.numpy())
    assert torch.equal(prepare(replace(text, corpus=str(tmp_path / "ids.npy"))).windows_NT, windows)
    np.save(tmp_path / "big.npy", windows.numpy() + 100_000)
    with pytest.raises(HarvestError, match="outside the model's vocabulary"):
        prepare(replace(text, corpus=str(tmp_path / "big.npy")))
    with pytest.raises(HarvestError, match="pass --ctx 64"):
        prepare(replace(text, corpus=str(tmp_path / "ids.npy"), ctx=32))
