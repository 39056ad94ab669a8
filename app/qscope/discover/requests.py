"""What a client sends to discover features, fit detectors, detect and compare footprints (pydantic, so these
double as the API schema), and how a request becomes example sets.

Examples come from pasted text (one per line, or blocks between '---' lines) or lists, from files sent as their
text (`.txt`, `.jsonl`, `.csv`: a set's own file, or one labelled file holding both sets), or from a demo set of
the served model's corpus. Files travel inside the JSON body (a browser reads them locally), so one size rule
covers them: QSCOPE_DISCOVER_MAX_FILE_BYTES per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from qscope.discover.demo import demo_examples
from qscope.discover.detectors import DetectorSpec
from qscope.discover.discovery import DiscoverOptions
from qscope.discover.examples import (
    ExampleLimits,
    ExamplesError,
    ExampleSet,
    build_set,
    check_size,
    clean_set,
    read_file,
    split_labelled,
    split_lines,
)
from qscope.inputs.numbers import Finite


class FileIn(BaseModel):
    name: str = Field(description="File name; its suffix says the format: .txt, .jsonl or .csv.")
    content: str = Field(description="The file's text (UTF-8).")


class ExamplesIn(BaseModel):
    """Two sets of examples, from any of: pasted text or lists, a file per set, one labelled file, a demo set."""

    model_id: str | None = Field(None, description="Model to run; default: the first one served.")
    a: str | list[str] = Field(
        "",
        description="Set A (the behaviour): text with one example per line (or blocks "
        "between lines holding only ---), or a list of examples.",
    )
    b: str | list[str] = Field("", description="Set B (without it), the same way.")
    a_file: FileIn | None = Field(None, description="A file of set A's examples (added to `a`).")
    b_file: FileIn | None = Field(None, description="A file of set B's examples (added to `b`).")
    labelled_file: FileIn | None = Field(
        None, description="One .csv or .jsonl holding both sets, told apart by `label_column`."
    )
    text_column: str = Field("text", description="The text column (.csv) or field (.jsonl).")
    label_column: str = Field("label", description="The label column of `labelled_file`.")
    positive_label: str | None = Field(
        None, description="The label value of set A; default: 1/true/yes/pos are A and 0/false/no/neg are B."
    )
    demo: str | None = Field(None, description="A demo set of the model's corpus instead (see /discover.json).")
    demo_n: int = Field(100, ge=4, le=1000, description="Examples per side drawn for a demo set.")
    name_a: str = Field("", max_length=100, description="A name for set A.")
    name_b: str = Field("", max_length=100, description="A name for set B.")


class DiscoverRequest(ExamplesIn):
    options: DiscoverOptions = Field(default_factory=DiscoverOptions)
    wait: bool = Field(False, description="Answer when done (with the result) instead of at once (with a job).")


class FootprintRequest(ExamplesIn):
    """Footprints of dataset A (and B, to compare): the sets are datasets here, not classes."""

    by: Literal["examples", "mass"] = Field(
        "examples",
        description="examples: features firing on at least "
        "`share` of the examples; mass: the fewest features carrying `share` "
        "of the activation mass.",
    )
    share: Finite = Field(0.2, gt=0, le=1)
    top: int = Field(50, ge=1, le=500, description="Features listed per group.")
    wait: bool = False


class FootprintUpload(BaseModel):
    name: str = Field(max_length=200, description="The file name: .parquet or .duckdb (written by `qscope footprint`).")
    data_b64: str = Field(description="The file's bytes, base64.")


class DetectorRequest(BaseModel):
    discovery: str = Field(description="The id of the discovery whose examples and split the detector is fit on.")
    spec: DetectorSpec
    name: str = Field("", max_length=200)


class DetectRequest(BaseModel):
    detector: str = Field(description="A saved detector's id.")
    texts: str | list[str] = Field(description="Texts to score: a list, or one per line (or blocks between ---).")


def _texts(value: str | list[str], side: str, notes: list[str]) -> list[str]:
    if isinstance(value, list):
        return list(value)
    texts, empty = split_lines(value)
    if empty:
        notes.append(f"{empty} empty line(s) of set {side} skipped")
    return texts


def _file_texts(f: FileIn, text_column: str, limits: ExampleLimits) -> list[str]:
    check_size(f.name, len(f.content.encode("utf-8")), limits)
    return [text for text, _ in read_file(f.name, f.content, text_field=text_column)]


def raw_sets(
    req: ExamplesIn, limits: ExampleLimits, corpus_dir: Path | None, seed: int = 0
) -> tuple[list[str], list[str], tuple[str, str], list[str]]:
    """(texts of A, texts of B, names, notes) as the request gives them, before cleaning."""
    notes: list[str] = []
    if req.demo:
        if corpus_dir is None:
            raise ExamplesError("demo: this model has no demo corpus (it was not built by `qscope build-demo`)")
        try:
            demo, a, b = demo_examples(corpus_dir, req.demo, req.demo_n, seed)
        except KeyError as e:
            raise ExamplesError(f"demo: {e.args[0]}") from e
        return a, b, (req.name_a or demo.a_name, req.name_b or demo.b_name), [f"demo set: {demo.title}"]
    a, b = _texts(req.a, "A", notes), _texts(req.b, "B", notes)
    if req.a_file:
        a += _file_texts(req.a_file, req.text_column, limits)
    if req.b_file:
        b += _file_texts(req.b_file, req.text_column, limits)
    if req.labelled_file:
        f = req.labelled_file
        check_size(f.name, len(f.content.encode("utf-8")), limits)
        rows = read_file(f.name, f.content, text_field=req.text_column, label_field=req.label_column)
        pos, neg = split_labelled(rows, req.positive_label)
        a, b = a + pos, b + neg
    return a, b, (req.name_a or "A", req.name_b or "B"), notes


def example_set(req: ExamplesIn, limits: ExampleLimits, corpus_dir: Path | None, seed: int = 0) -> ExampleSet:
    """The cleaned two-class example set of a discovery request."""
    a, b, names, notes = raw_sets(req, limits, corpus_dir, seed)
    return build_set(a, b, limits, names, notes)


def datasets(
    req: ExamplesIn, limits: ExampleLimits, corpus_dir: Path | None
) -> tuple[list[str], list[str] | None, tuple[str, str], list[str]]:
    """The one or two datasets of a footprint request, each cleaned on its own (no class rules apply)."""
    a, b, names, notes = raw_sets(req, limits, corpus_dir)
    kept_a = clean_set(a, limits, names[0], notes)
    kept_b = clean_set(b, limits, names[1], notes) if b else None
    if not kept_a:
        raise ExamplesError("dataset A is empty: give its examples (text, a file or a demo set)")
    return kept_a, kept_b, names, notes
