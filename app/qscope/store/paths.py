"""How the server names, to whoever asks, the files a feature store records (its model, corpus and SAE files).

The absolute paths of a server's disk are the operator's business: pages, `.json` twins and error bodies name a
file relative to the store's folder when it lies inside it, else by its last part alone. Relative paths (as a
harvest was given them) and hub ids are shown as recorded. `QSCOPE_SHOW_PATHS` turns this off for a server
only its operator uses. Also what to say of a store path that is not a file (`missing_store`), and the
signature that stamps what is cached beside a store (`file_signature`).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

# an absolute path inside a message: '/' and a name, and more of them; not after a word character ('8/10')
_ABSOLUTE = re.compile(r"(?<![\w./-])(?:/[\w.+@~-]+)+/?")


def shown_path(recorded: str | None, store: Path) -> str | None:
    """What a stranger is told about a path the store at `store` records."""
    if not recorded:
        return recorded
    path = PurePosixPath(recorded)
    if not path.is_absolute() and not recorded.startswith("~"):
        return recorded if ".." not in path.parts else path.name
    try:
        return str(path.relative_to(Path(store).resolve().parent))
    except ValueError:
        return path.name or recorded


def shown_message(text: str, store: Path) -> str:
    """A message with every absolute path in it replaced as shown_path does."""
    return _ABSOLUTE.sub(lambda m: shown_path(m.group(0).rstrip("/"), store) or "", text)


def file_signature(path: Path) -> str:
    """Size and modification time of a store file: changes whenever the file is rewritten (the search index
    cached beside it is stamped with it)."""
    stat = Path(path).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def missing_store(resolved: Path, given: str | Path) -> str:
    """What to say of a store path that is not a file: the stores beside it first (a misspelt name is likelier
    than a store never harvested), then how one is made."""
    beside = sorted(p.name for p in resolved.parent.glob("*.duckdb")) if resolved.parent.is_dir() else []
    folder = Path(given).parent
    if beside:
        names = ", ".join(str(folder / n) for n in beside[:8])
        return f"no feature store at {given}; {folder} has: {names}"
    return (
        f"no feature store at {given}: `make demo` (or `qscope demo`) builds and harvests the embedded default into "
        f"data/demo.duckdb; `qscope harvest --out {given}` harvests your own model"
    )
