"""Tests for qscope.sae: every reader against the formula written out by hand, hand-set 2x2
cases with exact numbers, bad inputs (each error names the file and the numbers), and find_sae_files."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

from qscope.sae import Sae, SaeFormatError, SaeSpec, find_sae_files, load_sae, save_qwen_scope
from qscope.sae.formats.common import site_from_hook
from tests.helpers.saes import (  # noqa: F401
    D,
    F,
    qwen_scope_weights,
    randn,
    random_weights,
    saelens_cfg,
    saelens_tensors,
    write_dir,
    write_saelens,
)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """True where score is among the k largest of its row (random floats: no ties)."""
    kth = score.sort(dim=-1, descending=True).values[..., k - 1 : k]
    return score >= kth


# ---------------------------------------------------------------------------------------------------------
# Qwen-Scope


def test_qwen_scope_k_from_folder_name(tmp_path: Path, gen: torch.Generator) -> None:
    w = qwen_scope_weights(gen)
    path = tmp_path / "SAE-Res-Qwen3-1.7B-Base-W32K-L0_5" / "layer12.sae.pt"
    save_qwen_scope(path, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    sae = load_sae(path)
    assert (sae.format, sae.architecture, sae.k, sae.d_in, sae.d_sae) == ("qwen-scope", "topk", 5, D, F)
    assert (sae.layer, sae.site, sae.source) == (12, "model.layers.12", path)

    x = randn(gen, 3, 4, D)
    pre = x @ w["W_enc"].T + w["b_enc"]
    expected = torch.where(top_k_mask(pre, 5), pre.clamp(min=0), 0.0)
    f = sae.encode(x)
    assert_close(f, expected)
    assert_close(sae.decode(f), f @ w["W_dec"].T + w["b_dec"])
    assert_close(sae(x), sae.decode(f))
    assert_close(sae.decoder_directions, w["W_dec"].T)


def test_qwen_scope_k_from_argument_and_hf_cache_layout(tmp_path: Path, gen: torch.Generator) -> None:
    w = qwen_scope_weights(gen)
    # a k the small test SAE can hold (a k above its width is refused: tests/integration/sae/test_values.py)
    snapshot = tmp_path / "models--Qwen--SAE-Res-Qwen3-8B-Base-W64K-L0_10" / "snapshots" / "abc123"
    save_qwen_scope(snapshot / "layer3.sae.pt", w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    assert load_sae(snapshot / "layer3.sae.pt").k == 10  # the repo name sits two folders up
    sae = load_sae(snapshot / "layer3.sae.pt", k=2)  # the argument wins
    assert sae.k == 2
    x = randn(gen, 5, D)
    pre = x @ w["W_enc"].T + w["b_enc"]
    assert_close(sae.encode(x), torch.where(top_k_mask(pre, 2), pre.clamp(min=0), 0.0))
    assert ((sae.encode(x) > 0).sum(-1) <= 2).all()


def test_qwen_scope_release_folder_picks_layer(tmp_path: Path, gen: torch.Generator) -> None:
    release = tmp_path / "SAE-Res-mini-W1K-L0_4"
    for n in (0, 1, 2):
        w = qwen_scope_weights(gen)
        save_qwen_scope(release / f"layer{n}.sae.pt", w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    assert load_sae(release, layer=1).source == release / "layer1.sae.pt"
    with pytest.raises(SaeFormatError, match=r"holds 3 SAEs .*layer0\.sae\.pt.*layer="):
        load_sae(release)
    with pytest.raises(SaeFormatError, match="no SAE for layer 7"):
        load_sae(release, layer=7)
    with pytest.raises(SaeFormatError, match=r"layer1\.sae\.pt reads layer 1 .* layer=2"):
        load_sae(release / "layer1.sae.pt", layer=2)


def test_save_qwen_scope_writes_fp32_dict_in_qwen_orientation(tmp_path: Path, gen: torch.Generator) -> None:
    w = {name: t.to(torch.bfloat16) for name, t in qwen_scope_weights(gen).items()}
    path = tmp_path / "out" / "layer0.sae.pt"
    save_qwen_scope(path, w["W_enc"][:, :], w["b_enc"], w["W_dec"], w["b_dec"])
    state = torch.load(path, weights_only=True)
    assert set(state) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert state["W_enc"].shape == (F, D) and state["W_dec"].shape == (D, F)
    assert all(t.dtype == torch.float32 for t in state.values())
    with pytest.raises(SaeFormatError, match=r"W_dec has shape \[16, 8\], expected \[d_in=8, d_sae=16\]"):
        save_qwen_scope(path, w["W_enc"], w["b_enc"], w["W_dec"].T, w["b_dec"])


# ---------------------------------------------------------------------------------------------------------
# SAELens


def test_saelens_v6_standard(tmp_path: Path, gen: torch.Generator) -> None:
    w = saelens_tensors(gen)
    path = write_saelens(tmp_path / "blocks.5.hook_resid_post", saelens_cfg("standard"), w)
    sae = load_sae(path.parent)  # the folder works as well as the file
    assert (sae.format, sae.architecture, sae.k) == ("saelens", "relu", None)
    assert (sae.layer, sae.site, sae.hook_name) == (5, "model.layers.5", "blocks.5.hook_resid_post")
    x = randn(gen, 2, 3, D)
    expected = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]).clamp(min=0)
    assert_close(sae.encode(x), expected)
    assert_close(sae.decode(expected), expected @ w["W_dec"] + w["b_dec"])


def test_saelens_v6_topk_with_hf_hook_name(tmp_path: Path, gen: torch.Generator) -> None:
    w = saelens_tensors(gen)
    cfg = saelens_cfg("topk", "blocks.7.hook_resid_post", k=3, apply_b_dec_to_input=False)
    cfg["metadata"]["hf_hook_name"] = "model.layers.7"
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    assert (sae.architecture, sae.k, sae.layer, sae.site) == ("topk", 3, 7, "model.layers.7")
    assert sae.hook_name == "blocks.7.hook_resid_post"
    x = randn(gen, 6, D)
    pre = x @ w["W_enc"] + w["b_enc"]
    assert_close(sae.encode(x), torch.where(top_k_mask(pre, 3), pre.clamp(min=0), 0.0))
    assert load_sae(tmp_path / "sae", k=5).k == 5


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path: Path, gen: torch.Generator) -> None:
    w = saelens_tensors(gen)
    cfg = saelens_cfg("topk", k=4, rescale_acts_by_decoder_norm=True)
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = randn(gen, 5, D)
    norm = w["W_dec"].norm(dim=-1)
    hidden = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) * norm  # SAELens ranks and returns pre * |W_dec|
    f = torch.where(top_k_mask(hidden, 4), hidden.clamp(min=0), 0.0)
    assert_close(sae.encode(x), f)
    assert_close(sae.decode(f), (f / norm) @ w["W_dec"] + w["b_dec"])
    assert_close(sae.decoder_directions.norm(dim=-1), torch.ones(F))


def test_saelens_jumprelu(tmp_path: Path, gen: torch.Generator) -> None:
    w = saelens_tensors(gen) | {"threshold": randn(gen, F).abs()}
    sae = load_sae(write_saelens(tmp_path / "s", saelens_cfg("jumprelu"), w))
    assert sae.architecture == "jumprelu"
    x = randn(gen, 4, D)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert_close(sae.encode(x), pre * (pre > w["threshold"]))


def test_saelens_gated(tmp_path: Path, gen: torch.Generator) -> None:
    w = random_weights(gen, W_enc=(D, F), W_dec=(F, D), b_dec=(D,), b_gate=(F,), b_mag=(F,), r_mag=(F,))
    sae = load_sae(write_saelens(tmp_path / "g", saelens_cfg("gated"), w))
    assert sae.architecture == "gated"
    x = randn(gen, 4, D)
    x_in = x - w["b_dec"]
    gate = (x_in @ w["W_enc"] + w["b_gate"]) > 0
    mag = torch.relu(x_in @ (w["W_enc"] * torch.exp(w["r_mag"])) + w["b_mag"])
    f = sae.encode(x)
    assert_close(f, gate.float() * mag)
    assert_close(sae.decode(f), f @ w["W_dec"] + w["b_dec"])


def test_saelens_batchtopk(tmp_path: Path, gen: torch.Generator) -> None:
    # no threshold: per-token top-k with the (rounded) k
    w = saelens_tensors(gen)
    sae = load_sae(write_saelens(tmp_path / "a", saelens_cfg("batchtopk", k=3.2), w))
    assert (sae.architecture, sae.k) == ("batchtopk", 3)
    x = randn(gen, 7, D)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert_close(sae.encode(x), torch.where(top_k_mask(pre, 3), pre.clamp(min=0), 0.0))
    # with a threshold: the threshold is the inference rule
    w["threshold"] = torch.full((F,), 0.7)
    sae = load_sae(write_saelens(tmp_path / "b", saelens_cfg("batchtopk", k=3), w))
    assert (sae.architecture, sae.k) == ("jumprelu", None)
    assert_close(sae.encode(x), pre * (pre > 0.7))


def test_saelens_pre_v6_topk_config(tmp_path: Path, gen: torch.Generator) -> None:
    w = saelens_tensors(gen)
    cfg = {
        "model_name": "qwen",
        "hook_point": "blocks.3.hook_resid_pre",
        "hook_point_layer": 3,
        "d_in": D,
        "d_sae": F,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 2},
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "sae_lens_training_version": "3.13.0",
    }
    sae = load_sae(write_saelens(tmp_path / "old", cfg, w))
    # hook_resid_pre of block 3 is the output of decoder layer 2
    assert (sae.architecture, sae.k, sae.layer, sae.site) == ("topk", 2, 2, "model.layers.2")
    assert sae.hook_name == "blocks.3.hook_resid_pre"
    x = randn(gen, 3, D)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert_close(sae.encode(x), torch.where(top_k_mask(pre, 2), pre.clamp(min=0), 0.0))


def test_saelens_pre_v6_relu_on_the_embeddings(tmp_path: Path, gen: torch.Generator) -> None:
    # an old file with a "finetuning scaling factor": f is multiplied by it before decoding
    w = saelens_tensors(gen) | {"scaling_factor": randn(gen, F).abs() + 0.5}
    cfg = {
        "hook_name": "blocks.0.hook_resid_pre",
        "d_in": D,
        "d_sae": F,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": False,
        "finetuning_scaling_factor": True,
    }
    sae = load_sae(write_saelens(tmp_path / "emb", cfg, w))
    assert (sae.architecture, sae.layer, sae.site, sae.apply_b_dec_to_input) == ("relu", None, None, False)
    x = randn(gen, 3, D)
    f = (x @ w["W_enc"] + w["b_enc"]).clamp(min=0)
    assert_close(sae.encode(x), f)
    assert_close(sae.decode(f), (f * w["scaling_factor"]) @ w["W_dec"] + w["b_dec"])


def test_saelens_expected_average_only_in_is_folded(tmp_path: Path, gen: torch.Generator) -> None:
    w = saelens_tensors(gen)
    cfg = saelens_cfg("standard", normalize_activations="expected_average_only_in")
    path = write_saelens(tmp_path / "n", cfg, w)
    with pytest.raises(SaeFormatError, match=r"cfg\.json.*no scaling factor.*activation_scaler\.json"):
        load_sae(path)
    (tmp_path / "n" / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.25}))
    sae = load_sae(path)
    assert sae.input_scale == 0.25
    x = 10 * randn(gen, 4, D)
    f = ((0.25 * x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]).clamp(min=0)
    assert_close(sae.encode(x), f)
    assert_close(sae.decode(f), (f @ w["W_dec"] + w["b_dec"]) / 0.25)
    assert_close(sae.decoder_directions, w["W_dec"] / 0.25)  # directions in model space


def test_saelens_per_token_normalisation_is_refused(tmp_path: Path, gen: torch.Generator) -> None:
    cfg = saelens_cfg("standard", normalize_activations="layer_norm")
    path = write_saelens(tmp_path / "ln", cfg, saelens_tensors(gen))
    with pytest.raises(SaeFormatError, match=r"ln/cfg\.json: normalize_activations 'layer_norm'"):
        load_sae(path)


# ---------------------------------------------------------------------------------------------------------
# Llama Scope (lm-saes)


def llamascope_cfg(act_fn: str, hook: str = "blocks.4.hook_resid_post", **extra) -> dict:
    cfg = {
        "sae_type": "sae",
        "hook_point_in": hook,
        "hook_point_out": hook,
        "d_model": D,
        "expansion_factor": 2,
        "use_decoder_bias": True,
        "act_fn": act_fn,
        "norm_activation": "dataset-wise",
        "sparsity_include_decoder_norm": True,
        "top_k": 3,
        "dtype": "torch.float32",
    }
    return cfg | extra


def llamascope_tensors(gen: torch.Generator) -> dict:
    # decoder rows of assorted norms, so sparsity_include_decoder_norm changes which features win
    W_D = randn(gen, F, D) * torch.linspace(0.2, 3.0, F)[:, None]
    return {"W_E": randn(gen, D, F), "b_E": randn(gen, F), "W_D": W_D, "b_D": randn(gen, D)}


def test_llamascope_topk_with_dataset_norm(tmp_path: Path, gen: torch.Generator) -> None:
    hook = "blocks.4.hook_resid_post"
    w = llamascope_tensors(gen) | {f"dataset_average_activation_norm.{hook}": torch.tensor(5.0)}
    path = write_dir(tmp_path / "L4R", "config.json", llamascope_cfg("topk"), "sae_weights.safetensors", w)
    sae = load_sae(path)
    assert (sae.format, sae.architecture, sae.k, sae.layer, sae.site) == (
        "llamascope",
        "topk",
        3,
        4,
        "model.layers.4",
    )
    scale = math.sqrt(D) / 5.0
    x = randn(gen, 2, 5, D)
    pre = (x * scale) @ w["W_E"] + w["b_E"]
    chosen = top_k_mask(pre.clamp(min=0) * w["W_D"].norm(dim=-1), 3)  # ranked by pre * |W_D row|
    f = torch.where(chosen, pre.clamp(min=0), 0.0)
    assert_close(sae.encode(x), f)
    assert_close(sae.decode(f), (f @ w["W_D"] + w["b_D"]) / scale)


def test_llamascope_jumprelu_in_checkpoints_folder(tmp_path: Path, gen: torch.Generator) -> None:
    log_t = 0.5 * randn(gen, F)
    w = llamascope_tensors(gen) | {
        "activation_function.log_jumprelu_threshold": log_t,
        "dataset_average_activation_norm.in": torch.tensor(2.0),
        "dataset_average_activation_norm.out": torch.tensor(4.0),
    }
    cfg = llamascope_cfg("jumprelu", "blocks.9.hook_resid_post")
    write_dir(tmp_path / "L9R", "config.json", cfg, "checkpoints/final.safetensors", w)
    sae = load_sae(tmp_path / "L9R")
    assert (sae.architecture, sae.layer, sae.source.name) == ("jumprelu", 9, "final.safetensors")
    s_in, s_out = math.sqrt(D) / 2.0, math.sqrt(D) / 4.0
    x = randn(gen, 6, D)
    pre = (x * s_in) @ w["W_E"] + w["b_E"]
    f = pre * (pre * w["W_D"].norm(dim=-1) > log_t.exp())
    assert_close(sae.encode(x), f)
    assert_close(sae.decode(f), (f @ w["W_D"] + w["b_D"]) / s_out)


def test_llamascope_first_release_layout(tmp_path: Path, gen: torch.Generator) -> None:
    """hyperparams.json, nn.Linear key names, one linear threshold for every feature."""
    w = llamascope_tensors(gen)
    linear = {
        "encoder.weight": w["W_E"].T,
        "encoder.bias": w["b_E"],
        "decoder.weight": w["W_D"].T,
        "decoder.bias": w["b_D"],
    }
    cfg = llamascope_cfg(
        "jumprelu",
        "blocks.2.hook_resid_post",
        jump_relu_threshold=0.4,
        sparsity_include_decoder_norm=False,
        dataset_average_activation_norm={"in": 3.0, "out": 3.0},
    )
    write_dir(tmp_path / "L2R", "hyperparams.json", cfg, "checkpoints/final.safetensors", linear)
    sae = load_sae(tmp_path / "L2R")
    x = randn(gen, 3, D)
    pre = (x * math.sqrt(D) / 3.0) @ w["W_E"] + w["b_E"]
    assert_close(sae.encode(x), pre * (pre > 0.4))


def test_llamascope_relu_already_folded(tmp_path: Path, gen: torch.Generator) -> None:
    w = llamascope_tensors(gen)
    cfg = llamascope_cfg("relu", "model.layers.6", norm_activation="inference")
    sae = load_sae(write_dir(tmp_path / "r", "config.json", cfg, "sae_weights.safetensors", w))
    assert (sae.architecture, sae.layer, sae.site) == ("relu", 6, "model.layers.6")
    x = randn(gen, 3, D)
    assert_close(sae.encode(x), (x @ w["W_E"] + w["b_E"]).clamp(min=0))


def test_llamascope_dataset_norm_missing(tmp_path: Path, gen: torch.Generator) -> None:
    path = write_dir(
        tmp_path / "m", "config.json", llamascope_cfg("topk"), "sae_weights.safetensors", llamascope_tensors(gen)
    )
    with pytest.raises(SaeFormatError, match=r"sae_weights\.safetensors: norm_activation is 'dataset-wise'"):
        load_sae(path)


# ---------------------------------------------------------------------------------------------------------
# sparsify


def sparsify_tensors(gen: torch.Generator) -> dict:
    shapes = {"encoder.weight": (F, D), "encoder.bias": (F,), "W_dec": (F, D), "b_dec": (D,)}
    return random_weights(gen, **shapes)


def test_sparsify(tmp_path: Path, gen: torch.Generator) -> None:
    w = sparsify_tensors(gen)
    cfg = {
        "activation": "topk",
        "expansion_factor": 2,
        "normalize_decoder": True,
        "num_latents": F,
        "k": 3,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D,
    }
    path = write_dir(tmp_path / "run" / "layers.6", "cfg.json", cfg, "sae.safetensors", w)
    (tmp_path / "run" / "config.json").write_text("{}")  # sparsify's run config at the root: not an SAE
    sae = load_sae(path.parent)
    assert (sae.format, sae.architecture, sae.k) == ("sparsify", "topk", 3)
    assert (sae.layer, sae.site, sae.hook_name) == (6, "model.layers.6", "layers.6")
    x = randn(gen, 2, 4, D)
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    f = torch.where(top_k_mask(pre, 3), pre, 0.0)
    assert_close(sae.encode(x), f)
    assert_close(sae.decode(f), f @ w["W_dec"] + w["b_dec"])


# ---------------------------------------------------------------------------------------------------------
# hand-set 2x2 cases: exact numbers


def test_hand_set_topk_2x2(tmp_path: Path) -> None:
    # Qwen-Scope orientation: W_enc [d_sae, d_in], W_dec [d_in, d_sae]
    W_enc = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    W_dec = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    path = tmp_path / "layer0.sae.pt"
    save_qwen_scope(path, W_enc, torch.tensor([0.0, 0.5]), W_dec, torch.tensor([0.5, -0.5]))
    sae = load_sae(path, k=1)
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    # pre = [3, 2.5], [1, -3.5], [-1, 4.5], [-3, -1.5]: keep the largest, then ReLU (the last row's is < 0)
    f = sae.encode(x)
    assert torch.equal(f, torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 4.5], [0.0, 0.0]]))
    assert torch.equal(sae.decode(f), torch.tensor([[3.5, 2.5], [1.5, 0.5], [0.5, 8.5], [0.5, -0.5]]))


def test_hand_set_jumprelu_2x2(tmp_path: Path) -> None:
    w = {
        "W_enc": torch.tensor([[1.0, -1.0], [2.0, 1.0]]),
        "b_enc": torch.tensor([0.0, 1.0]),
        "W_dec": torch.tensor([[1.0, 1.0], [0.0, -2.0]]),
        "b_dec": torch.tensor([0.0, 0.0]),
        "threshold": torch.tensor([1.5, 0.5]),
    }
    cfg = saelens_cfg("jumprelu", apply_b_dec_to_input=False) | {"d_in": 2, "d_sae": 2}
    sae = load_sae(write_saelens(tmp_path / "j", cfg, w))
    x = torch.tensor([[1.0, 0.5], [0.5, 0.25], [0.0, 0.0]])
    # pre = [2, 0.5], [1, 0.75], [0, 1]: kept only where strictly above [1.5, 0.5]
    f = sae.encode(x)
    assert torch.equal(f, torch.tensor([[2.0, 0.0], [0.0, 0.75], [0.0, 1.0]]))
    assert torch.equal(sae.decode(f), torch.tensor([[2.0, 2.0], [0.0, -1.5], [0.0, -2.0]]))


# ---------------------------------------------------------------------------------------------------------
# the module itself: shapes, dtype, gradients


def test_any_leading_shape_dtype_and_gradients(tmp_path: Path, gen: torch.Generator) -> None:
    w = qwen_scope_weights(gen)
    path = tmp_path / "L0_4" / "layer1.sae.pt"
    save_qwen_scope(path, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    sae = load_sae(path, dtype=torch.float64)
    assert sae.W_enc.dtype == torch.float64 and not sae.W_enc.requires_grad
    x = randn(gen, 2, 3, 4, D)
    f = sae.encode(x)  # float32 in, the SAE's float64 out
    assert f.shape == (2, 3, 4, F) and f.dtype == torch.float64
    assert_close(sae.encode(x[0, 0, 0]), f[0, 0, 0])  # a single vector works too
    assert sae.decode(f).shape == (2, 3, 4, D)
    x.requires_grad_(True)
    sae(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"d_in=8 but got input of shape \[3, 5\]"):
        sae.encode(torch.zeros(3, 5))


def test_sae_from_spec_checks_its_pieces() -> None:
    spec = SaeSpec(torch.zeros(2, 3), torch.zeros(3), torch.zeros(3, 2), torch.zeros(2), "jumprelu")
    with pytest.raises(SaeFormatError, match="needs threshold_F"):
        Sae(spec)
    spec.architecture, spec.k = "topk", None
    with pytest.raises(SaeFormatError, match="needs k >= 1"):
        Sae(spec)
    spec.k = 1
    assert Sae(spec).d_sae == 3


# ---------------------------------------------------------------------------------------------------------
# errors name the file and the numbers


def test_wrong_kind_of_file(tmp_path: Path) -> None:
    path = tmp_path / "layer3.sae.pt"
    path.write_text("this is not a torch file\n")
    with pytest.raises(SaeFormatError, match=r"layer3\.sae\.pt is not a torch file"):
        load_sae(path, k=4)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(SaeFormatError, match=r"layer3\.sae\.pt holds a list"):
        load_sae(path, k=4)


def test_missing_keys(tmp_path: Path, gen: torch.Generator) -> None:
    path = tmp_path / "layer3.sae.pt"
    torch.save({"W_enc": randn(gen, F, D), "b_enc": randn(gen, F)}, path)
    with pytest.raises(SaeFormatError, match=r"layer3\.sae\.pt lacks W_dec, b_dec .*found: W_enc, b_enc"):
        load_sae(path, k=4)
    # a sparsify-style file where SAELens keys are expected
    w = {"encoder.weight": randn(gen, F, D), "W_dec": randn(gen, F, D)}
    path = write_saelens(tmp_path / "s", saelens_cfg("standard"), w)
    with pytest.raises(SaeFormatError, match=r"s/sae_weights\.safetensors lacks W_enc, b_dec, b_enc"):
        load_sae(path)


def test_wrong_shapes(tmp_path: Path, gen: torch.Generator) -> None:
    path = tmp_path / "layer3.sae.pt"
    torch.save(
        {"W_enc": randn(gen, F, D), "b_enc": randn(gen, F), "W_dec": randn(gen, D, F + 1), "b_dec": randn(gen, D)}, path
    )
    msg = r"layer3\.sae\.pt: W_dec has shape \[8, 17\], expected \[d_in=8, d_sae=16\] \(.*W_enc \[16, 8\]"
    with pytest.raises(SaeFormatError, match=msg):
        load_sae(path, k=4)
    w = saelens_tensors(gen) | {"b_enc": randn(gen, F + 2)}
    path = write_saelens(tmp_path / "s", saelens_cfg("standard"), w)
    with pytest.raises(SaeFormatError, match=r"b_enc has shape \[18\], expected \[d_sae=16\]"):
        load_sae(path)
    cfg = saelens_cfg("standard") | {"d_sae": 32}
    path = write_saelens(tmp_path / "c", cfg, saelens_tensors(gen))
    with pytest.raises(SaeFormatError, match=r"c/cfg\.json says d_sae=32; the weights say 16"):
        load_sae(path)


def test_check_fits(tmp_path: Path, gen: torch.Generator) -> None:
    w = qwen_scope_weights(gen)
    path = tmp_path / "L0_2" / "layer0.sae.pt"
    save_qwen_scope(path, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    sae = load_sae(path)
    sae.check_fits(D)
    with pytest.raises(SaeFormatError, match=r"layer0\.sae\.pt reads d_in=8 but the model's hidden size is 1024"):
        sae.check_fits(1024)


def test_qwen_scope_without_k(tmp_path: Path, gen: torch.Generator) -> None:
    w = qwen_scope_weights(gen)
    path = tmp_path / "my-saes" / "layer5.sae.pt"
    save_qwen_scope(path, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    with pytest.raises(SaeFormatError, match=r"my-saes/layer5\.sae\.pt: Qwen-Scope files do not store k"):
        load_sae(path)


def test_unknown_paths(tmp_path: Path) -> None:
    with pytest.raises(SaeFormatError, match="does not exist"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaeFormatError, match=r"empty holds no SAE; looked in it and below for layer<n>"):
        load_sae(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(SaeFormatError, match=r"weights\.bin is not one qscope reads.*cfg\.json"):
        load_sae(tmp_path / "weights.bin")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cfg.json").write_text("{not json")
    save_file({"x": torch.zeros(1)}, tmp_path / "bad" / "sae_weights.safetensors")
    with pytest.raises(SaeFormatError, match=r"bad/cfg\.json could not be read as JSON"):
        load_sae(tmp_path / "bad")
    (tmp_path / "bad" / "cfg.json").write_text("{}")
    (tmp_path / "bad" / "sae_weights.safetensors").write_text("not safetensors")
    with pytest.raises(SaeFormatError, match=r"bad/sae_weights\.safetensors is not a readable safetensors"):
        load_sae(tmp_path / "bad")


# ---------------------------------------------------------------------------------------------------------
# find_sae_files and hook names


def test_find_sae_files(tmp_path: Path, gen: torch.Generator) -> None:
    release = tmp_path / "qwen" / "SAE-Res-mini-W1K-L0_4"
    for n in (10, 0, 2):
        w = qwen_scope_weights(gen)
        save_qwen_scope(release / f"layer{n}.sae.pt", w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    w = qwen_scope_weights(gen)
    save_qwen_scope(tmp_path / ".tmp" / "layer1.sae.pt", w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"])
    hook = "blocks.1.hook_resid_post"
    write_saelens(tmp_path / "saelens" / hook, saelens_cfg("standard", hook), saelens_tensors(gen))
    write_dir(tmp_path / "sparsify" / "layers.2", "cfg.json", {"k": 2}, "sae.safetensors", sparsify_tensors(gen))
    w = llamascope_tensors(gen)
    cfg = llamascope_cfg("topk", "blocks.5.hook_resid_post", norm_activation="inference")
    write_dir(tmp_path / "llama" / "L5R", "config.json", cfg, "checkpoints/final.safetensors", w)
    (tmp_path / "notes.txt").write_text("not an SAE")

    found = [str(p.relative_to(tmp_path)) for p in find_sae_files(tmp_path)]
    assert found == [
        "qwen/SAE-Res-mini-W1K-L0_4/layer0.sae.pt",
        "saelens/blocks.1.hook_resid_post/sae_weights.safetensors",
        "qwen/SAE-Res-mini-W1K-L0_4/layer2.sae.pt",
        "sparsify/layers.2/sae.safetensors",
        "llama/L5R/checkpoints/final.safetensors",
        "qwen/SAE-Res-mini-W1K-L0_4/layer10.sae.pt",
    ]
    assert load_sae(tmp_path, layer=5).format == "llamascope"
    assert load_sae(tmp_path / "saelens").layer == 1  # the one SAE below a folder
    assert load_sae(tmp_path / "sparsify" / "layers.2" / "cfg.json").format == "sparsify"


@pytest.mark.parametrize(
    ("hook", "layer", "site"),
    [
        ("blocks.12.hook_resid_post", 12, "model.layers.12"),
        ("blocks.12.hook_resid_pre", 11, "model.layers.11"),
        ("blocks.0.hook_resid_pre", None, None),
        ("blocks.3.hook_mlp_out", 3, "model.layers.3.mlp"),
        ("blocks.3.hook_resid_mid", 3, None),
        ("blocks.3.attn.hook_z", 3, None),
        ("model.layers.12", 12, "model.layers.12"),
        ("layers.7", 7, "model.layers.7"),
        ("layers.7.mlp", 7, "model.layers.7.mlp"),
        ("embed_tokens", None, None),
        (None, None, None),
    ],
)
def test_site_from_hook(hook: str | None, layer: int | None, site: str | None) -> None:
    assert site_from_hook(hook) == (layer, site)
