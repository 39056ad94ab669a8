"""A model that is there but cannot be loaded: pickled weights that weights-only loading refuses, a config whose
sizes do not match the weights, a config with more layers than the weights hold. Each is one clear line from
load_model and from `qscope harvest` (no traceback, none of torch's advice to unpickle anyway); a server answers
503 with that line, remembers it and does not load again per request. Made from the tiny mini-Qwen."""

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from qscope.config import Settings
from qscope.model import ModelLoadError, load_model
from qscope.store.writer import write_store
from qscope.web import create_app
from tests.helpers.server import cli_env, qscope_cmd
from tests.helpers.stores import SAE_ID, VOCAB, hostile_tables

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _copy(tiny_demo: Path, out: Path) -> Path:
    shutil.copytree(tiny_demo / "model", out)
    return out


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def broken(tiny_demo, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("broken-models")
    pickled = _copy(tiny_demo, tmp / "pickled")
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    state["training_args"] = argparse.Namespace(lr=1e-3)  # as old training scripts saved them
    torch.save(state, pickled / "pytorch_model.bin")
    wider = _copy(tiny_demo, tmp / "wider")
    cfg = json.loads((wider / "config.json").read_text())
    _edit_config(wider, intermediate_size=cfg["intermediate_size"] * 2)
    deeper = _copy(tiny_demo, tmp / "deeper")
    _edit_config(deeper, num_hidden_layers=cfg["num_hidden_layers"] + 1, layer_types=None)
    return {"pickled": pickled, "wider": wider, "deeper": deeper}


EXPECTED = {"pickled": "pickle", "wider": "do not match", "deeper": "lack"}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_load_model_says_what_is_wrong_in_one_line(broken, name):
    with pytest.raises(ModelLoadError) as err:
        load_model(broken[name], device="cpu")
    message = str(err.value)
    assert EXPECTED[name] in message, message
    assert "\n" not in message and "weights_only" not in message and "trust" not in message, message


@pytest.mark.parametrize("name", ["pickled", "wider"])
def test_harvest_prints_one_line_and_fails(broken, tiny_demo, tmp_path, name):
    args = ["harvest", "--model", str(broken[name]), "--sae", str(tiny_demo / "saes"), "--tokens", "256"]
    args += ["--corpus", str(tiny_demo / "corpus" / "val.jsonl"), "--out", str(tmp_path / "x.duckdb")]
    r = subprocess.run([*qscope_cmd(), *args], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "weights_only" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and EXPECTED[name] in errors[0], out[-3000:]
    assert not (tmp_path / "x.duckdb").exists()


def test_server_answers_503_once_loaded_and_remembers(broken, tiny_demo, tmp_path):
    tables = hostile_tables()
    tables.info["source"] = str(next((tiny_demo / "saes").rglob("*.sae.pt")))
    meta = {"schema_version": "1", "model_id": "evil", "model": str(broken["pickled"])}
    write_store(tmp_path / "s.duckdb", meta, [tables], VOCAB)
    settings = Settings(device="cpu", cache_dir=tmp_path / "cache", rate_steer_per_min=0, rate_inspect_per_min=0)
    with TestClient(create_app([tmp_path / "s.duckdb"], settings, warm_search=False)) as c:
        first = c.post("/api/steer", json={"prompt": "hi", "features": [{"sae_id": SAE_ID, "feature": 0}]})
        assert first.status_code == 503 and "pickle" in first.json()["error"], first.text
        assert "weights_only" not in first.text and str(tmp_path) not in first.text
        shutil.rmtree(broken["pickled"] / ".." / "pickled-gone", ignore_errors=True)
        broken["pickled"].rename(broken["pickled"].with_name("pickled-gone"))  # a second load would say "missing"
        try:
            for r in (c.get("/inspect.json", params={"text": "hi"}), c.post("/api/steer", json={"prompt": "hi"})):
                assert r.status_code == 503 and r.json()["error"] == first.json()["error"], r.text
            r = c.get("/search.json", params={"q": "hi", "kind": "fires"})
            assert r.status_code == 200 and "pickle" in r.json()["notes"][0]
        finally:
            broken["pickled"].with_name("pickled-gone").rename(broken["pickled"])
