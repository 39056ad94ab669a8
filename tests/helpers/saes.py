"""SAE files in each format a user brings, written from random weights of small known shapes (D inputs, F
features)."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

D, F = 8, 16  # d_in, d_sae


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def write_dir(folder: Path, cfg_name: str, cfg: dict, weights_name: str, tensors: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / cfg_name).write_text(json.dumps(cfg))
    (folder / weights_name).parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in tensors.items()}, folder / weights_name)
    return folder / weights_name


def saelens_cfg(architecture: str, hook: str = "blocks.5.hook_resid_post", **extra) -> dict:
    """A SAELens v6 cfg.json, as `SAE.save_model` writes it."""
    cfg = {
        "architecture": architecture,
        "d_in": D,
        "d_sae": F,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": "Qwen/Qwen3-0.6B",
            "hook_name": hook,
            "hook_head_index": None,
            "prepend_bos": False,
            "context_size": 128,
            "sae_lens_version": "6.12.1",
        },
    }
    return cfg | extra


def random_weights(gen: torch.Generator, **shapes: tuple[int, ...]) -> dict:
    return {name: randn(gen, *shape) for name, shape in shapes.items()}


def saelens_tensors(gen: torch.Generator) -> dict:
    return random_weights(gen, W_enc=(D, F), b_enc=(F,), W_dec=(F, D), b_dec=(D,))


def write_saelens(folder: Path, cfg: dict, tensors: dict) -> Path:
    return write_dir(folder, "cfg.json", cfg, "sae_weights.safetensors", tensors)


def qwen_scope_weights(gen: torch.Generator) -> dict:
    return random_weights(gen, W_enc=(F, D), b_enc=(F,), W_dec=(D, F), b_dec=(D,))
