"""Example sets for the baselines benchmark from real text outside mini-Qwen's demo corpus (which is Python's
standard library and docs, fortunes and the Jargon File): files every Debian system carries.

- `licenses-vs-descriptions`: paragraphs of the free-software licences in /usr/share/common-licenses (legal
  English) vs the long descriptions of the installed packages in /var/lib/dpkg/status (product English);
- `shell-vs-python`: blocks of the shell scripts in /usr/bin and /usr/sbin vs blocks of the Python packages
  installed beside qscope (site-packages, never the standard library the demo corpus holds).

Drawn with a seed, each example 80 to 600 characters, duplicates dropped; ValueError when a system lacks the files.
"""

from __future__ import annotations

import random
import re
import site
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

MIN_CHARS, MAX_CHARS = 80, 600
MAX_FILES = 400  # files read per side (sorted, then sampled with the seed)


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        flat = " ".join(block.split())
        if MIN_CHARS <= len(flat) <= MAX_CHARS:
            yield flat


def _code_blocks(text: str, lines: int = 8) -> Iterator[str]:
    """Runs of up to `lines` non-blank lines, as they stand (indentation kept)."""
    kept: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            kept.append(line.rstrip())
            if len(kept) < lines:
                continue
        block = "\n".join(kept)
        kept = []
        if MIN_CHARS <= len(block) <= MAX_CHARS:
            yield block


def licence_paragraphs(root: Path = Path("/usr/share/common-licenses")) -> Iterator[str]:
    for path in sorted(p for p in root.glob("*") if p.is_file() and not p.is_symlink())[:MAX_FILES]:
        yield from _paragraphs(path.read_text(errors="replace"))


def package_descriptions(status: Path = Path("/var/lib/dpkg/status")) -> Iterator[str]:
    """Each installed package's long description (the indented lines under Description:), one paragraph."""
    if not status.is_file():
        return
    for stanza in status.read_text(errors="replace").split("\n\n"):
        body = re.search(r"^Description: [^\n]*\n((?: [^\n]*\n?)+)", stanza, re.M)
        if body:
            text = " ".join(line.strip() for line in body.group(1).splitlines() if line.strip() != ".")
            flat = " ".join(text.split())
            if MIN_CHARS <= len(flat) <= MAX_CHARS:
                yield flat


def shell_blocks(roots: Iterable[Path] = (Path("/usr/bin"), Path("/usr/sbin"))) -> Iterator[str]:
    files = sorted(p for root in roots if root.is_dir() for p in root.iterdir() if p.is_file())
    for path in files:
        try:
            head = path.read_bytes()[:64]
        except OSError:
            continue
        if re.match(rb"#! ?/(usr/)?bin/(env )?(ba|da)?sh\b", head):
            yield from _code_blocks(path.read_text(errors="replace"))


def python_blocks(roots: Iterable[Path] | None = None) -> Iterator[str]:
    """Blocks of the installed third-party packages' Python files (site-packages only)."""
    found = sorted(
        p for root in (roots if roots is not None else map(Path, site.getsitepackages())) for p in root.rglob("*.py")
    )
    for path in random.Random(0).sample(found, min(MAX_FILES, len(found))):
        yield from _code_blocks(path.read_text(errors="replace"))


SETS: dict[str, tuple[str, str, Callable[[], Iterator[str]], Callable[[], Iterator[str]]]] = {
    "licenses-vs-descriptions": ("licence text", "package descriptions", licence_paragraphs, package_descriptions),
    "shell-vs-python": ("shell scripts", "Python (site-packages)", shell_blocks, python_blocks),
}


def other_examples(name: str, n: int, seed: int = 0) -> tuple[tuple[str, str], list[str], list[str]]:
    """((name of A, name of B), n examples of A, n of B), drawn with `seed`."""
    if name not in SETS:
        raise ValueError(f"no set {name!r}; there are: {', '.join(SETS)}")
    a_name, b_name, read_a, read_b = SETS[name]
    a, b = list(dict.fromkeys(read_a())), list(dict.fromkeys(read_b()))
    b = [x for x in b if x not in set(a)]
    if len(a) < 10 or len(b) < 10:
        raise ValueError(f"{name}: this system has {len(a)} examples of {a_name} and {len(b)} of {b_name} (need 10)")
    rng = random.Random(seed)
    return (a_name, b_name), rng.sample(a, min(n, len(a))), rng.sample(b, min(n, len(b)))
