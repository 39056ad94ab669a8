"""`qscope harvest` from the command line: a small run, the stop/resume exit path, and bad inputs, each of which
must fail with one clear line, a non-zero exit code, no traceback and nothing at --out. Also the corpus readers
and the id rules."""

import json
from pathlib import Path

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from qscope.cli import cli
from qscope.harvest.corpus import CorpusError, iter_documents, pack_windows
from qscope.harvest.ids import model_id_for, sae_id_for, unique_ids
from qscope.model import rank_mask
from qscope.sae import save_qwen_scope
from tests.helpers.harvests import demo_harvest_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(tiny_demo: Path, out: Path, *extra: str):
    args = [
        *demo_harvest_args(tiny_demo, out),
        "--tokens",
        "1024",
        "--ctx",
        "32",
        "--batch",
        "8",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    return result, result.output


def test_harvest_cli_writes_a_store_and_resumes(tiny_demo, tmp_path):
    out = tmp_path / "cli.duckdb"
    result, text = run(tiny_demo, out, "--stop-after", "2")
    assert result.exit_code == 3, text
    assert "--resume" in text and not out.exists()
    result, text = run(tiny_demo, out, "--resume")
    assert result.exit_code == 0, text
    assert "resuming from batch 2" in text and "dead" in text and str(out) in text.replace("\n", "")
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 2 * 512
    con.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--corpus": "missing/corpus.jsonl"}, "corpus not found"),
        ({"--corpus": "EMPTY_FILE"}, "empty"),
        ({"--corpus": "EMPTY_DIR"}, "no .txt, .jsonl or .parquet"),
        ({"--corpus": "BAD_JSONL"}, "text"),
        ({"--corpus": "some-org/some-dataset"}, "HF_HUB_OFFLINE"),
        ({"--model": "no/such/folder/"}, "model folder not found"),
        ({"--sae": "WRONG_D_IN"}, "d_in"),
        ({"--sae": "GARBAGE"}, "not a torch file"),
        ({"--sae": "missing.sae.pt"}, "not found"),
        ({"--ctx": "1"}, "--ctx must be at least 2"),
        ({"--top-k": "0"}, "--top-k must be at least 1"),
        ({"--tokens": "0"}, "--tokens must be at least 1"),
        ({"--before": "-1"}, "--before must be at least 0"),
        ({"--sink-norm-ratio": "-1"}, "--sink-norm-ratio"),
        ({"--device": "tpu9"}, "device"),
    ],
)
def test_bad_input_fails_cleanly(tiny_demo, tmp_path, change, message):
    files = {
        "EMPTY_FILE": tmp_path / "empty.jsonl",
        "EMPTY_DIR": tmp_path / "nothing",
        "BAD_JSONL": tmp_path / "bad.jsonl",
        "WRONG_D_IN": tmp_path / "SAE-x-L0_4" / "layer0.sae.pt",
        "GARBAGE": tmp_path / "SAE-y-L0_4" / "layer0.sae.pt",
    }
    files["EMPTY_FILE"].write_text("\n")
    files["EMPTY_DIR"].mkdir()
    files["BAD_JSONL"].write_text(json.dumps({"body": "no text field"}) + "\n")
    d_in, d_sae = 32, 16  # the tiny model's hidden size is 64
    save_qwen_scope(
        files["WRONG_D_IN"], torch.zeros(d_sae, d_in), torch.zeros(d_sae), torch.zeros(d_in, d_sae), torch.zeros(d_in)
    )
    files["GARBAGE"].parent.mkdir()
    files["GARBAGE"].write_bytes(b"\x00not a torch file" * 10)
    flag, value = next(iter(change.items()))
    value = str(files.get(value, value))
    out = tmp_path / "out" / "bad.duckdb"
    result, text = run(tiny_demo, out, flag, value)
    assert result.exit_code not in (0, None), text
    assert message in text, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert not out.exists() and not out.with_name("bad.duckdb.tmp").exists()


def test_corpus_formats_give_the_same_windows(tiny_demo, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_demo / "model")
    texts = ["The first document.\nWith two lines.", "A second one, longer: " + "words " * 40, "Third."]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, t in enumerate(texts):
        (folder / f"{i}.txt").write_text(t)
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS text", [texts])
    con.execute(f"COPY t TO '{tmp_path / 'c.parquet'}' (FORMAT parquet)")
    windows = [pack_windows(tok, iter_documents(tmp_path / name), 8, 100) for name in ("c.jsonl", "txt", "c.parquet")]
    assert windows[0].dtype == torch.int32 and windows[0].shape[1] == 8
    assert torch.equal(windows[0], windows[1]) and torch.equal(windows[0], windows[2])
    eos = tok.eos_token_id
    assert windows[0].flatten().tolist().count(eos) >= 2  # documents are joined by end-of-text
    assert len(pack_windows(tok, iter_documents(tmp_path / "c.jsonl"), 8, 3)) == 3  # --tokens caps it
    with pytest.raises(CorpusError, match="fewer than one window"):
        pack_windows(tok, iter(["hi"]), 64, 10)


def test_rank_mask_leaves_out_position_0_and_sinks():
    hidden = torch.ones(2, 5, 4)
    hidden[1, 3] *= 50  # a sink: norm 50x the median
    assert rank_mask(hidden, True, 10.0).tolist() == [[False, True, True, True, True], [False, True, True, False, True]]
    assert rank_mask(hidden, False, 0.0).all()


def test_ids_are_url_safe_and_stable(tmp_path):
    release = tmp_path / "SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"
    release.mkdir()
    assert sae_id_for(release / "layer12.sae.pt") == "SAE-Res-Qwen3-1.7B-Base-W32K-L0_50__layer12"
    snap = tmp_path / "models--Qwen--SAE-Res-X-L0_50" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    assert sae_id_for(snap / "layer3.sae.pt") == "SAE-Res-X-L0_50__layer3"
    lens = tmp_path / "my saes" / "blocks.4.hook_resid_post"
    lens.mkdir(parents=True)
    assert sae_id_for(lens / "sae_weights.safetensors") == "my-saes__blocks.4.hook_resid_post"
    assert model_id_for("Qwen/Qwen3-1.7B-Base") == "Qwen3-1.7B-Base"
    (tmp_path / "demo" / "model").mkdir(parents=True)
    assert model_id_for(tmp_path / "demo" / "model") == "demo"
    assert unique_ids(["a", "a", "b", "a"]) == ["a", "a-2", "b", "a-3"]


def test_cli_defaults_are_the_options_defaults():
    import dataclasses
    import inspect

    from qscope.cli.harvest import harvest_cmd
    from qscope.harvest.options import HarvestOptions

    fields = {f.name: f.default for f in dataclasses.fields(HarvestOptions)}
    params = inspect.signature(harvest_cmd).parameters
    for name in (
        "tokens",
        "ctx",
        "batch",
        "top_k",
        "before",
        "after",
        "skip_first",
        "sink_norm_ratio",
        "checkpoint_every",
        "resume",
    ):
        assert params[name].default == fields[name], name
