"""SAE files whose shapes are right but whose values cannot work: NaN or infinite weights, integer tensors, a k
larger than the SAE's width. load_sae refuses each with one line naming the file and the tensor, and
`qscope harvest` exits non-zero with that line instead of writing a store of dead features."""

import subprocess

import pytest
import torch
from safetensors.torch import save_file

from qscope.sae import SaeFormatError, load_sae
from tests.helpers.saes import D, F, qwen_scope_weights, saelens_cfg, saelens_tensors, write_saelens
from tests.helpers.server import cli_env, qscope_cmd


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def qwen_file(tmp_path, weights: dict, k: int = 4):
    path = tmp_path / f"SAE-Res-x-W16-L0_{k}" / "layer1.sae.pt"
    path.parent.mkdir(parents=True)
    torch.save(weights, path)
    return path


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("W_enc", float("nan"), "NaN"), ("b_dec", float("inf"), "infinite"), ("W_dec", float("-inf"), "infinite")],
)
def test_non_finite_weights_are_refused(tmp_path, gen, key, value, says):
    w = qwen_scope_weights(gen)
    w[key].view(-1)[3] = value
    with pytest.raises(SaeFormatError, match=f"{key} holds 1 {says}") as err:
        load_sae(qwen_file(tmp_path, w))
    assert "layer1.sae.pt" in str(err.value)


def test_integer_tensors_are_refused(tmp_path, gen):
    w = qwen_scope_weights(gen)
    w["W_enc"] = (w["W_enc"] * 10).to(torch.int64)
    with pytest.raises(SaeFormatError, match="W_enc holds int64 values"):
        load_sae(qwen_file(tmp_path, w))
    t = saelens_tensors(gen)
    t["b_enc"] = t["b_enc"].to(torch.int32)
    with pytest.raises(SaeFormatError, match="b_enc holds int32 values"):
        load_sae(write_saelens(tmp_path / "saelens", saelens_cfg("standard"), t))


def test_k_larger_than_the_width_is_refused(tmp_path, gen):
    with pytest.raises(SaeFormatError, match=f"k=40 .* {F} features"):
        load_sae(qwen_file(tmp_path, qwen_scope_weights(gen), k=40))
    with pytest.raises(SaeFormatError, match=f"k={F + 1} "):
        load_sae(qwen_file(tmp_path / "b", qwen_scope_weights(gen)), k=F + 1)
    assert load_sae(qwen_file(tmp_path / "c", qwen_scope_weights(gen)), k=F).k == F  # all of them: allowed


def test_a_nan_threshold_is_refused(tmp_path, gen):
    t = saelens_tensors(gen) | {"threshold": torch.full((F,), float("nan"))}
    folder = tmp_path / "jr"
    folder.mkdir()
    save_file(t, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(__import__("json").dumps(saelens_cfg("jumprelu")))
    with pytest.raises(SaeFormatError, match=f"threshold holds {F} NaN"):
        load_sae(folder)


def test_harvest_refuses_a_nan_sae_in_one_line(tiny_demo, tmp_path):
    good = next((tiny_demo / "saes").rglob("layer1.sae.pt"))
    state = torch.load(good, weights_only=True)
    state["W_dec"][0, 0] = float("nan")
    bad = tmp_path / good.parent.name / good.name
    bad.parent.mkdir()
    torch.save(state, bad)
    out = tmp_path / "x.duckdb"
    args = ["harvest", "--model", str(tiny_demo / "model"), "--sae", str(bad), "--tokens", "256"]
    args += ["--corpus", str(tiny_demo / "corpus" / "val.jsonl"), "--out", str(out)]
    r = subprocess.run([*qscope_cmd(), *args], capture_output=True, text=True, env=cli_env(), timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in text, text[-2000:]
    errors = [line for line in text.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "W_dec holds 1 NaN" in errors[0] and "layer1.sae.pt" in errors[0], text[-2000:]
    assert not out.exists()


def test_a_good_sae_still_loads(tmp_path, gen):
    sae = load_sae(qwen_file(tmp_path, qwen_scope_weights(gen)))
    assert (sae.d_in, sae.d_sae, sae.k) == (D, F, 4)
