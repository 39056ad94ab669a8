"""The identity of what an evaluation ran on: the model's files, the SAE files and the feature store, each by
SHA-256 of its content, and the versions of qscope, torch and transformers.

Hashes are cached per process by (path, size, mtime), so a second evaluation on the same files costs nothing.
A model given as a hub id (not a local folder) is named by its id alone.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from qscope.steer.evaluate.result import FileIdentity, Identity

CHUNK = 1 << 22
MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.tiktoken")
_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256 (hex), from the cache when the file has not changed."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    with _lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def model_files(source: str) -> list[Path]:
    folder = Path(source)
    if not folder.is_dir():
        return []
    return sorted({p for pattern in MODEL_FILES for p in folder.glob(pattern) if p.is_file()})


def identify(
    model_id: str,
    model_source: str,
    sae_files: Sequence[tuple[str, str]],
    store: str | None,
    device: str,
    dtype: str,
    on_bytes: Callable[[int], None] | None = None,
) -> Identity:
    """Hash everything (sae_files: (sae_id, path)); on_bytes(n) reports progress as bytes are read."""

    def ident(name: str, path: Path) -> FileIdentity:
        if path.is_dir():  # a release folder (config + weights): one hash over its files' hashes
            inner = "".join(f"{p.name}:{sha256(p, on_bytes)}\n" for p in sorted(path.iterdir()) if p.is_file())
            return FileIdentity(name=name, path=str(path), sha256=hashlib.sha256(inner.encode()).hexdigest())
        return FileIdentity(name=name, path=str(path), sha256=sha256(path, on_bytes))

    files = model_files(model_source)
    model = [ident(p.name, p) for p in files] or [FileIdentity(name=model_source, path=model_source, sha256="")]
    return Identity(
        model_id=model_id,
        model=model,
        saes=[ident(sae_id, Path(p)) for sae_id, p in sae_files],
        store=ident(Path(store).name, Path(store)) if store else None,
        qscope_version=_pkg("qscope"),
        torch_version=_pkg("torch"),
        transformers_version=_pkg("transformers"),
        device=device,
        dtype=dtype,
    )


def bytes_to_hash(model_source: str, sae_files: Sequence[tuple[str, str]], store: str | None) -> int:
    """How many bytes identify() reads when nothing is cached (for its progress bar)."""
    paths = model_files(model_source) + [Path(p) for _, p in sae_files] + ([Path(store)] if store else [])
    files = [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
    return sum(f.stat().st_size for f in files if f.is_file())
