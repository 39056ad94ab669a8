"""Checkpoints of a running harvest, kept beside its output as ``FILE.duckdb.ckpt/state.pt``.

A checkpoint holds the number of batches done, the seconds spent, every SAE's FeatureState and a key: the
settings and inputs that decide the result (options, SAE files, a digest of the token windows, the chunking).
``--resume`` loads it only when the key matches, so the resumed run yields the same database as an
uninterrupted one. Writes go to a temporary file renamed into place: a crash mid-save keeps the previous one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from qscope.harvest.options import HarvestError
from qscope.harvest.state import FeatureState


def checkpoint_dir(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".ckpt")


def save_checkpoint(out: Path, key: dict, next_batch: int, seconds: float, states: list[FeatureState]) -> None:
    folder = checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": key,
        "next_batch": next_batch,
        "seconds": seconds,
        "states": [{k: v.detach().cpu() for k, v in s.state_dict().items()} for s in states],
    }
    tmp = folder / "state.pt.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, folder / "state.pt")


def load_checkpoint(out: Path, key: dict, states: list[FeatureState]) -> tuple[int, float] | None:
    """Restore `states` from the checkpoint beside `out`: (next batch, seconds spent), or None if none."""
    path = checkpoint_dir(out) / "state.pt"
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: pickle, zip and torch errors all land here
        raise HarvestError(f"cannot read the checkpoint {path}: {e}; delete it to start over") from e
    if payload["key"] != key:
        old = payload["key"]
        differ = sorted(k for k in key.keys() | old.keys() if key.get(k) != old.get(k))
        raise HarvestError(
            f"the checkpoint {path} was made with other settings ({', '.join(differ)}); "
            "run without --resume to start over"
        )
    for state, saved in zip(states, payload["states"], strict=True):
        state.load_state_dict(saved)
    return int(payload["next_batch"]), float(payload["seconds"])


def remove_checkpoint(out: Path) -> None:
    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
