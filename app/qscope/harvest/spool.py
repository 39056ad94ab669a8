"""The spool of a sharded harvest: every finished task's partial states, one file per task, beside the output.

Layout: ``FILE.duckdb.spool/<key digest>/task-00012.pt`` plus ``key.json``. The key holds everything that
decides the result (options, SAE files, a digest of the windows, the device type, the task plan), so a rerun of
the same command finds the tasks it already has and runs only the others, and a rerun with other settings never
mixes its tasks with these. Files are written under a temporary name and renamed into place: a file that exists
is whole. The driver saves a task's states as soon as the pool returns them, so a lost worker loses nothing
already returned, and a lost driver loses only the tasks still running. The whole spool goes once the store is
written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch

from qscope.harvest.options import HarvestError
from qscope.harvest.shards import ShardResult

_TASK_RE = re.compile(r"task-(\d{5,})\.pt")


def spool_root(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".spool")


class Spool:
    """Finished tasks of one job (one key) on disk."""

    def __init__(self, out: Path, key: dict) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.root = spool_root(out)
        self.dir = self.root / digest

    def path(self, index: int) -> Path:
        return self.dir / f"task-{index:05d}.pt"

    def finished(self) -> set[int]:
        """Indices of the tasks whose states are saved."""
        if not self.dir.is_dir():
            return set()
        return {int(m.group(1)) for p in self.dir.iterdir() if (m := _TASK_RE.fullmatch(p.name))}

    def save(self, result: ShardResult) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.is_file():
            key_file.write_text(json.dumps(self.key, indent=1, sort_keys=True))
        path = self.path(result.index)
        tmp = path.with_name(path.name + ".tmp")
        payload = {
            "states": result.states,
            "tokens": result.tokens,
            "seconds": result.seconds,
            "host": result.host,
            "timings": result.timings,
        }
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def load(self, index: int) -> dict:
        """A saved task (its tensors memory-mapped: only what is read comes off the disk)."""
        path = self.path(index)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # pickle, zip and torch errors of a damaged file all land here
            raise HarvestError(f"cannot read the spooled task {path}: {e}; delete it to run that task again") from e

    def remove(self) -> None:
        """Delete the spool of this output (every key)."""
        shutil.rmtree(self.root, ignore_errors=True)
