"""Demo example sets cut from the mini-Qwen corpus, so discovery, detectors and footprints work out of the box.

The corpus (``corpus/{val,train}.jsonl`` of a `qscope build-demo` folder) mixes the Python standard library's
sources with prose: the Python docs (reStructuredText), fortunes and the Jargon File, where installed. Its lines
do not say where they came from, so each document is recognised by its shape (reST directives and roles, Jargon
entries ``:term:`` and ``{cross refs}``, Python statements) and examples are cut from it one line or sentence
each: code lines (outside strings and comments), docstring sentences, prose sentences. "English prose" is the
sentences of fortunes and the Jargon File made of plain letters and punctuation only (the Python docs talk about
code; a corpus of the standard library alone lends its docstrings). Every set is drawn with a fixed seed; a set
whose sources this corpus lacks is not offered.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_RST = re.compile(r"^\s*\.\. [\w-]+::|:(func|meth|class|mod|term|ref|attr|data|exc|const|keyword):`", re.M)
_JARGON = re.compile(r"^   :[^:\n]{1,60}:( |$)|\{[a-z][^{}\n]{0,40}\}", re.M)
_CODE = re.compile(
    r"^\s*(def |class |import |from \S+ import |return\b|if .*:$|elif |else:|for .*:$|while |try:|"
    r"except\b|with .*:$|raise |yield\b|@\w|self\.)"
)
_WORDY = re.compile(r"[A-Za-z ,;'’\-]")
_PLAIN = re.compile(r"[A-Za-z ,;:.!?'’\"“”\-]+")  # no digits, brackets, operators or underscores
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")


@dataclass(frozen=True)
class DemoSet:
    name: str
    title: str
    a_name: str
    b_name: str
    a_kind: str  # which example pool each side draws from
    b_kind: str


DEMOS = {
    d.name: d
    for d in (
        DemoSet("code-vs-prose", "Python code vs English prose", "Python code", "English prose", "code", "prose"),
        DemoSet("docstrings-vs-code", "Docstrings vs code", "docstring sentences", "Python code", "docstring", "code"),
        DemoSet("fortunes-vs-jargon", "Fortunes vs the Jargon File", "fortunes", "Jargon File", "fortune", "jargon"),
        DemoSet("docs-vs-fortunes", "Python docs prose vs fortunes", "Python docs", "fortunes", "rst", "fortune"),
    )
}


def doc_kind(text: str) -> str:
    """'rst', 'jargon', 'python' or 'fortune' (short prose), by the document's shape."""
    if len(_RST.findall(text)) >= 2:
        return "rst"
    if len(_JARGON.findall(text)) >= 2:
        return "jargon"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and sum(bool(_CODE.match(ln)) for ln in lines) >= max(2, 0.15 * len(lines)):
        return "python"
    return "fortune" if len(text) < 1500 else "prose"


def _is_sentence(s: str, lo: int = 30, hi: int = 200) -> bool:
    """A prose sentence: long enough, mostly letters, capitalised, ending like a sentence (no code fragments)."""
    return (
        lo <= len(s) <= hi
        and len(s.split()) >= 5
        and s[0].isupper()
        and s[-1] in ".!?\"”'"
        and sum(bool(_WORDY.match(c)) for c in s) >= 0.9 * len(s)
    )


def _sentences(paragraph: str) -> Iterator[str]:
    text = re.sub(r"\s+", " ", paragraph).strip()
    for s in _SENTENCE_END.split(text):
        s = s.strip()
        if _is_sentence(s):
            yield s


def _paragraphs(lines: list[str]) -> Iterator[str]:
    buf: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            buf.append(line)
        elif buf:
            yield " ".join(buf)
            buf = []


def python_pieces(text: str) -> tuple[list[str], list[str]]:
    """(code lines, docstring sentences) of a Python document: triple-quoted strings tracked line by line."""
    code, doc_lines, in_string = [], [], False
    for line in text.splitlines():
        quotes = line.count('"""') + line.count("'''")
        stripped = line.strip()
        if in_string or (quotes and stripped.startswith(('"""', "'''", 'r"""'))):
            doc_lines.append(stripped.strip("\"'r") if quotes else stripped)
        elif 20 <= len(stripped) <= 120 and not stripped.startswith("#") and re.search(r"[(=:\[.]", stripped):
            code.append(stripped)
        else:
            doc_lines.append("")  # a code line ends a docstring paragraph
        if quotes % 2 == 1:
            in_string = not in_string
    return code, [s for p in _paragraphs(doc_lines) for s in _sentences(p)]


def prose_pieces(text: str, kind: str) -> list[str]:
    """Sentences of a prose document, markup lines and attributions left out."""
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if kind == "rst" and (s.startswith((".. ", ">>>", "...")) or re.fullmatch(r"[=\-~^*#]{3,}", s)):
            s = ""
        if kind == "jargon" and re.match(r"^:[^:]+:", s):
            s = ""
        if s.startswith("--"):  # a fortune's attribution
            s = ""
        lines.append(re.sub(r"[{}`]|:\w+:", "", s))
    return [s for p in _paragraphs(lines) for s in _sentences(p)]


@lru_cache(maxsize=4)
def pools(corpus_dir: Path) -> dict[str, list[str]]:
    """Example pools by kind (code, docstring, prose, rst, fortune, jargon) from a corpus folder, deduplicated."""
    out: dict[str, list[str]] = {k: [] for k in ("code", "docstring", "prose", "rst", "fortune", "jargon")}
    for split in ("val.jsonl", "train.jsonl"):
        path = corpus_dir / split
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line).get("text", "") if line.strip() else ""
                kind = doc_kind(text)
                if kind == "python":
                    code, docs = python_pieces(text)
                    out["code"] += code
                    out["docstring"] += docs
                else:
                    sentences = prose_pieces(text, kind)
                    if kind != "rst":  # the Python docs' prose talks about code: not plain English prose
                        out["prose"] += [x for x in sentences if _PLAIN.fullmatch(x)]
                    out.setdefault(kind, []).extend(sentences)
    if not out["prose"]:  # a corpus of the standard library alone: its docstrings are the English prose it has
        out["prose"] = [x for x in out["docstring"] if _PLAIN.fullmatch(x)]
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def available(corpus_dir: Path | None, n: int = 20) -> list[DemoSet]:
    """The demo sets this corpus can fill with at least n examples a side."""
    if corpus_dir is None or not corpus_dir.is_dir():
        return []
    p = pools(corpus_dir)
    return [d for d in DEMOS.values() if len(p.get(d.a_kind, [])) >= n and len(p.get(d.b_kind, [])) >= n]


def demo_examples(corpus_dir: Path, name: str, n: int = 100, seed: int = 0) -> tuple[DemoSet, list[str], list[str]]:
    """(the set, n examples of side A, n of side B), drawn with `seed`; KeyError for an unknown or unfillable set."""
    if name not in DEMOS:
        raise KeyError(f"no demo set {name!r}; there are: {', '.join(DEMOS)}")
    demo, p = DEMOS[name], pools(corpus_dir)
    rng = random.Random(seed)
    a = [x for x in p.get(demo.a_kind, []) if x not in set(p.get(demo.b_kind, []))]
    b = list(p.get(demo.b_kind, []))
    if not a or not b:
        raise KeyError(f"the corpus in {corpus_dir} has no {demo.a_name if not a else demo.b_name} to draw from")
    return demo, rng.sample(a, min(n, len(a))), rng.sample(b, min(n, len(b)))


def corpus_dir_of(model_source: str | None, corpus: str | None) -> Path | None:
    """Where a store's demo corpus lives: the harvest's corpus folder, or `corpus/` beside its model folder."""
    for candidate in (
        Path(corpus).parent if corpus else None,
        Path(model_source).parent / "corpus" if model_source else None,
    ):
        if candidate is not None and (candidate / "train.jsonl").is_file():
            return candidate
    return None
