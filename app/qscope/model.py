"""The model core: load a Qwen causal LM with the real transformers classes, name its sites, hook them.

Sites are Hugging Face module paths relative to the ``*ForCausalLM`` (``model.layers.12``). The output of
decoder layer n (``out[0]`` when the layer returns a tuple) is resid_post, where Qwen-Scope SAEs read.
All hook state lives in one context manager, ``hooks()``, which removes what it added in ``finally``;
``capture()`` builds on it and can stop the forward right after the deepest site it needs. `rank_mask` says which
positions count when features are ranked: not position 0 (Qwen has no BOS token) and not high-norm "sink" tokens,
whose residual norm is often 100x the median and would swamp every feature's top activations.
"""

import logging
import os
import pickle
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

log = logging.getLogger(__name__)

HookFn = Callable[[Tensor], Tensor | None]

# transformers' from_pretrained is not thread-safe: while one thread loads, another thread's load of a model with
# tied embeddings can come out without its lm_head (reported missing). A server loads its live model and the search
# embedder on different threads, so every model load in the process takes this lock.
LOADING = threading.Lock()

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_SITE_RE = re.compile(r"model\.layers\.(\d+)")
# A hub id is "name" or "org/name"; anything else that is not an existing folder is a missing local path.
_HUB_ID_RE = re.compile(r"[\w-][\w.-]*(/[\w.-]+)?")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the path or id and what was wrong."""


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device to use: "auto" (or None) means cuda when available, else cpu."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    return dev


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weight dtype: "auto" (or None) means bf16 on cuda, fp32 elsewhere."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}: use float32, bfloat16 or float16")
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use 'auto' or one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


@dataclass
class LoadedModel:
    """A causal LM ready for inference, with what the rest of the app needs to know about it."""

    model: PreTrainedModel  # eval mode, on `device`, in `dtype`
    tokenizer: PreTrainedTokenizerBase | None
    model_id: str  # display id: the hub id, or the folder name for a local checkpoint
    path: str  # the hub id or the full local folder it was loaded from
    device: torch.device
    dtype: torch.dtype
    # d_model; qwen4_exp's decoder layers output hc_count * d_model (its residual streams side by side)
    hidden_size: int
    vocab_size: int
    model_type: str  # config.model_type of the checkpoint, e.g. "qwen3", "qwen3_moe", "qwen3_5"

    @property
    def n_layers(self) -> int:
        return len(decoder_layers(self.model))

    def require_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer; ModelLoadError when the model was loaded without one (load_model(tokenizer=False))."""
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.model_id} was loaded without its tokenizer")
        return self.tokenizer


def load_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    tokenizer: bool = True,
) -> LoadedModel:
    """Load a causal LM (any Qwen family; other decoder-only LMs with a warning) from a hub id or a folder."""
    model_id, source = _resolve_source(name_or_path)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    config = _load_config(source)
    if not config.model_type.startswith("qwen"):
        log.warning("%s has model_type %r, not a Qwen model; loading it anyway", source, config.model_type)
    # transformers decorates PreTrainedModel.to with functools.wraps, which typeshed types as a plain function
    # (its `self` unbound), so a bound call reads as a missing argument
    model = _load_weights(source, torch_dtype).to(dev).eval()  # type: ignore[arg-type]
    try:
        decoder_layers(model)
    except ValueError as e:
        raise ModelLoadError(f"{source!r} ({config.model_type}) has no decoder layers: {e}") from e
    text_config = model.config.get_text_config()
    return LoadedModel(
        model=model,
        tokenizer=_load_tokenizer(source) if tokenizer else None,
        model_id=model_id,
        path=source,
        device=dev,
        dtype=torch_dtype,
        hidden_size=text_config.hidden_size,
        vocab_size=text_config.vocab_size,
        model_type=config.model_type,
    )


def _load_weights(source: str, torch_dtype: torch.dtype) -> PreTrainedModel:
    """The checkpoint's weights in its model class; ModelLoadError (one line) for anything that stops them
    loading whole: a refused pickle, sizes or tensors that do not match the config, a damaged file."""
    try:
        with LOADING, _without_load_report():
            # with output_loading_info the call returns (model, info), which transformers' annotations do not say
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, output_loading_info=True, ignore_mismatched_sizes=True
            )
        model: PreTrainedModel = loaded[0]
        info: dict[str, Any] = loaded[1]
    except pickle.UnpicklingError as e:
        raise ModelLoadError(f"the weights of {source!r} are {refused_pickle(e)}; save them as safetensors") from None
    except Exception as e:  # noqa: BLE001 - damaged files fail anywhere from OSError to RuntimeError
        raise ModelLoadError(f"could not load the weights of {source!r}: {first_line(e)}") from e
    # transformers initialises what does not fit at random and loads on: a model that would answer noise
    if mismatched := info.get("mismatched_keys"):
        key, in_file, in_config = next(iter(mismatched))
        raise ModelLoadError(
            f"the weights of {source!r} do not match its config.json: {key} is {list(in_file)} in the file but "
            f"{list(in_config)} by the config ({len(mismatched)} tensors differ)"
        )
    if missing := sorted(info.get("missing_keys") or ()):
        raise ModelLoadError(
            f"the weights of {source!r} lack {len(missing)} tensors its config.json asks for (first: {missing[0]})"
        )
    return model


@contextmanager
def _without_load_report() -> Iterator[None]:
    """transformers logs a table of mismatched and missing tensors; the ModelLoadError says it in one line."""
    report = logging.getLogger("transformers.modeling_utils")

    def no_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    report.addFilter(no_report)
    try:
        yield
    finally:
        report.removeFilter(no_report)


def refused_pickle(error: BaseException) -> str:
    """What a file that torch's weights-only loader refused holds, for a message (never torch's advice to load
    it anyway: unpickling runs whatever code the pickle names)."""
    text = str(error)
    if found := re.search(r"GLOBAL ([\w.]+)", text):
        return f"a pickle of more than plain tensors ({found.group(1)}), which qscope will not unpickle"
    # no class named: the bytes are no pickle the loader can read at all (garbage, another format)
    why = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    return f"not a torch file ({why.group(1).strip() if why else 'its unpickler refused it'})"


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _resolve_source(name_or_path: str | Path) -> tuple[str, str]:
    """(model_id, source): a local folder gives (folder name, absolute path); a hub id gives (id, id)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.name, str(path.resolve())
    if path.exists():
        raise ModelLoadError(f"{str(name_or_path)!r} is a file; give the checkpoint folder that holds config.json")
    name = str(name_or_path)
    if isinstance(name_or_path, Path) or name.startswith(".") or not _HUB_ID_RE.fullmatch(name):
        raise ModelLoadError(f"model folder not found: {name!r}")
    return name, name


def _load_config(source: str) -> PreTrainedConfig:
    """The checkpoint's config, checked to describe a causal LM that this transformers knows."""
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise ModelLoadError(f"{source!r} is not a checkpoint folder: it has no config.json")
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as e:
        raise ModelLoadError(_not_found(source, e)) from e
    except ValueError as e:  # unknown model_type, malformed config.json
        raise ModelLoadError(f"{source!r} has a config this transformers cannot read: {e}") from e
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"{source!r} is not a causal LM (model_type {config.model_type!r})")
    return config


def _not_found(source: str, error: OSError) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return f"{source!r} is neither a local folder nor in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    return f"{source!r} is neither a local folder nor a reachable hub model: {error}"


def _load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    hint = "pass tokenizer=False to load the model alone"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as e:
        raise ModelLoadError(f"no usable tokenizer in {source!r} ({hint}): {e}") from e
    # transformers 5 builds an empty tokenizer (special tokens only) when the folder has no tokenizer files
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise ModelLoadError(f"no tokenizer files in {source!r}, only an empty vocabulary ({hint})")
    return tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder layers: model.model.layers for Qwen, else get_decoder().layers, else the first
    ModuleList named "layers"."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    decoder = model.get_decoder() if isinstance(model, PreTrainedModel) else None
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            return module
    raise ValueError(f"no decoder layer list found in {type(model).__name__}")


def resid_site(layer: int) -> str:
    """The site of decoder layer `layer`'s output (resid_post), as a module path of the *ForCausalLM."""
    if layer < 0:
        raise ValueError(f"layer must be >= 0, got {layer}")
    return f"model.layers.{layer}"


def site_layer(site: str) -> int | None:
    """The layer number of a resid site ("model.layers.12" -> 12); None for any other site."""
    match = _SITE_RE.fullmatch(site)
    return int(match.group(1)) if match else None


def get_module(model: nn.Module, site: str) -> nn.Module:
    """The module at `site`. Layer sites go through decoder_layers(), so they also work for models whose
    layers are not at model.model.layers."""
    layer = site_layer(site)
    if layer is None:
        try:
            return model.get_submodule(site)
        except AttributeError as e:
            raise ValueError(f"no module at site {site!r} in {type(model).__name__}") from e
    layers = decoder_layers(model)
    if layer >= len(layers):
        raise ValueError(f"site {site!r} out of range: this model has layers 0..{len(layers) - 1}")
    return layers[layer]


@contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[None]:
    """Run the body with one forward hook per site. Each fn gets the site's hidden state [B, T, d]; a tensor
    it returns replaces the output. Every hook added here is removed on exit, also when the body raises."""
    handles = []
    try:
        for site, fn in fns.items():
            handles.append(get_module(model, site).register_forward_hook(_wrap(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _wrap(fn: HookFn) -> Callable[[nn.Module, tuple, Tensor | tuple], object]:
    """A torch forward hook that unwraps a tuple output for fn and re-wraps what fn returns."""

    def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> object:
        if not isinstance(output, tuple):
            return fn(output)
        new = fn(output[0])
        return None if new is None else (new, *output[1:])

    return hook


class _StopForward(Exception):
    """Raised from a capture hook once every requested site is stored, to skip the rest of the forward."""


def capture(
    model: nn.Module,
    sites: Sequence[str],
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    stop_early: bool = True,
) -> dict[str, Tensor]:
    """One no-grad forward; returns {site: hidden [B, T, d]}. With stop_early the forward is aborted as soon
    as the last requested site has run, so later layers and the LM head cost nothing."""
    wanted = dict.fromkeys(sites)  # ordered, without duplicates
    out: dict[str, Tensor] = {}

    def store(site: str) -> HookFn:
        def fn(hidden_BTD: Tensor) -> None:
            out[site] = hidden_BTD.detach()
            if stop_early and len(out) == len(wanted):
                raise _StopForward

        return fn

    device = next(model.parameters()).device
    mask = attention_mask.to(device) if attention_mask is not None else None
    with torch.no_grad(), hooks(model, {site: store(site) for site in wanted}):
        try:
            model(input_ids=input_ids.to(device), attention_mask=mask, use_cache=False)
        except _StopForward:
            pass
    missing = wanted - out.keys()
    if missing:
        raise RuntimeError(f"sites never ran during the forward: {sorted(missing)}")
    return {site: out[site] for site in sites}


def rank_mask(hidden_BTD: Tensor, skip_first: bool, sink_norm_ratio: float) -> Tensor:
    """bool [B, T]: tokens that count in rankings and statistics (not position 0, not high-norm sinks)."""
    norm_BT = hidden_BTD.float().norm(dim=-1)
    valid_BT = torch.ones_like(norm_BT, dtype=torch.bool)
    if skip_first:
        valid_BT[:, 0] = False
    if sink_norm_ratio > 0:
        valid_BT &= norm_BT <= sink_norm_ratio * norm_BT.median()
    return valid_BT
