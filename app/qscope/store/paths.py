"""How the server names, to whoever asks, the files a feature store records (its model, corpus and SAE files).

The absolute paths of a server's disk are the operator's business: pages, `.json` twins and error bodies name a
file relative to the store's folder when it lies inside it, else by its last part alone. Relative paths (as a
harvest was given them) and hub ids are shown as recorded. `Settings.show_paths` turns this off for a server
only its operator uses.
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
