"""The discover service of one server: limits, the job queue, the app database, and the operations the routes
call (start a discovery or a footprint, fit and save a detector, detect). Built once by create_app.

The routes hand it a `ServedModel`: the live model of a store as discovery sees it (model, tokenizer, SAEs, the
model's lock, how tokens are counted, labels, the demo corpus), so this layer never imports the web or the
live-run machinery.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from qscope.appdb import is_in_memory, is_missing_file
from qscope.appdb.first_use import OpenedOnFirstUse
from qscope.config import DiscoverSettings
from qscope.discover import footprint_files
from qscope.discover.activations import ActivationRunner
from qscope.discover.detector_runs import DetectInputs, DetectResult, SavedDetector, detect, fit_on_discovery
from qscope.discover.detectors import DetectorSpec
from qscope.discover.discovery import DiscoverOptions, Discovery, discover
from qscope.discover.examples import ExampleLimits, ExamplesError, ExampleSet, split_lines
from qscope.discover.footprint_runs import FootprintRecord, record, run_footprints
from qscope.discover.footprints import By
from qscope.discover.store import DiscoverStore, Listed, new_id
from qscope.jobs import Job, JobRunner
from qscope.sae import Sae
from qscope.store.untrusted import Bounds, hide_paths


@dataclass
class ServedModel:
    model_id: str
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    saes: dict[str, Sae]
    lock: threading.Lock
    skip_first: bool
    sink_norm_ratio: float
    label_of: Callable[[str, int], str]
    decode: Callable[[list[int]], list[str]]
    corpus_dir: Path | None


def runner_for(
    served: ServedModel, batch_tokens: int, sae_ids: list[str] | None = None, lock: threading.Lock | None = None
) -> ActivationRunner:
    """The activation runner of a served model over all its SAEs, or those of `sae_ids` it has."""
    saes = served.saes if sae_ids is None else {s: served.saes[s] for s in sae_ids if s in served.saes}
    pad = served.tokenizer.pad_token_id
    return ActivationRunner(
        served.model,
        saes,
        served.skip_first,
        served.sink_norm_ratio,
        batch_tokens,
        lock=lock,
        pad_id=pad if pad is not None else 0,
    )


class Discovering:
    def __init__(self, discover: DiscoverSettings, max_chars: int, db_url: str) -> None:
        """max_chars: the longest example text (the live model's bound, QSCOPE_MAX_CHARS)."""
        self.limits = ExampleLimits(
            max_examples=discover.max_examples, max_chars=max_chars, max_file_bytes=discover.max_file_bytes
        )
        self.upload_bounds = Bounds(max_rows=discover.max_file_rows)
        self.max_tokens = discover.max_tokens
        self.batch_tokens = discover.batch_tokens
        self.max_detect_texts = discover.max_detect_texts
        self.jobs = JobRunner("jobs", discover.queue_size, discover.queue_per_client)
        self.db_url = db_url
        self._db = OpenedOnFirstUse(lambda: DiscoverStore(self.db_url))  # a server that never saves writes no file

    @property
    def db(self) -> DiscoverStore:
        return self._db.get()

    def runner(self, served: ServedModel, sae_ids: list[str] | None = None) -> ActivationRunner:
        return runner_for(served, self.batch_tokens, sae_ids, lock=served.lock)

    def start_discovery(
        self, served: ServedModel, examples: ExampleSet, options: DiscoverOptions, client: str = ""
    ) -> Job:
        """Queue a discovery as `client`'s job (QueueFull past the queue or the client's share of it)."""

        def run(job: Job) -> str:
            d = discover(
                examples,
                self.runner(served),
                served.tokenizer,
                served.model_id,
                options,
                self.max_tokens,
                served.label_of,
                job.report,
                job.cancel,
            )
            job.report("save", 0, 1)
            return self.save_discovery(d)

        return self.jobs.submit("discover", f"{examples.names[0]} vs {examples.names[1]}", run, client)

    def save_discovery(self, d: Discovery) -> str:
        top = d.ranking.a_side[0].test_auroc if d.ranking.a_side else None
        d.id = new_id()
        return self.db.save("discovery", d.id, d.model_id, f"{d.names[0]} vs {d.names[1]}", d.model_dump_json(), top)

    def discovery(self, discovery_id: str) -> Discovery | None:
        body = self._body("discovery", discovery_id)
        return Discovery.model_validate_json(body) if body else None

    def train_sets(self, discovery_id: str) -> tuple[list[str], list[str]] | None:
        """A saved discovery's train texts of set A and of set B (a steering evaluation's DiffMean arm reads
        them: qscope.steer.evaluate.diffmean); None when there is no such discovery."""
        d = self.discovery(discovery_id)
        if d is None:
            return None
        train = [e for e in d.examples if e.split == "train"]
        return [e.text for e in train if e.label == 1], [e.text for e in train if e.label == 0]

    def fit_detector(self, served: ServedModel, d: Discovery, spec: DetectorSpec, name: str) -> SavedDetector:
        def runner_of(sae_ids):
            return self.runner(served, sae_ids), served.tokenizer

        saved = fit_on_discovery(d, spec, name, runner_of)
        saved.id = new_id()
        self.db.save("detector", saved.id, saved.model_id, saved.name, saved.model_dump_json(), saved.test.f1)
        return saved

    def detector(self, detector_id: str) -> SavedDetector | None:
        body = self._body("detector", detector_id)
        return SavedDetector.model_validate_json(body) if body else None

    def detect(self, served: ServedModel, saved: SavedDetector, texts: str | list[str]) -> DetectResult:
        texts = split_lines(texts)[0] if isinstance(texts, str) else [t for t in texts if t.strip()]
        if not texts:
            raise ExamplesError("texts: nothing to score (every line is empty)")
        if len(texts) > self.max_detect_texts:
            raise ExamplesError(f"texts: {len(texts)} given; at most {self.max_detect_texts} per request")
        too_long = [i for i, t in enumerate(texts) if len(t) > self.limits.max_chars]
        if too_long:
            raise ExamplesError(
                f"texts: text {too_long[0] + 1} has {len(texts[too_long[0]]):,} characters; at most "
                f"{self.limits.max_chars:,}"
            )
        if saved.detector.reads_residual:  # any SAE at its site: the tokens that count there are the site's
            at_site = [s for s, sae in served.saes.items() if sae.require_site() == saved.detector.site]
            if not at_site:
                raise ExamplesError(
                    f"detector: it reads {saved.detector.site}, where {served.model_id} has no SAE here"
                )
            sae_ids = at_site[:1]
        else:
            sae_ids = list(dict.fromkeys(k[0] for k in saved.detector.keys))
        missing = [s for s in sae_ids if s not in served.saes]
        if missing:
            raise ExamplesError(f"detector: it reads {missing[0]}, which {served.model_id} here does not have")
        runner = self.runner(served, sae_ids)
        return detect(saved, texts, DetectInputs(runner, served.tokenizer, served.decode))

    def start_footprint(
        self,
        served: ServedModel,
        a: list[str],
        b: list[str] | None,
        names: tuple[str, str],
        notes: list[str],
        by: By,
        share: float,
        top: int,
        client: str = "",
    ) -> Job:
        def run(job: Job) -> str:
            rec, _, _ = run_footprints(
                served.model_id,
                a,
                b,
                names,
                self.runner(served),
                served.tokenizer,
                self.max_tokens,
                by,
                share,
                top,
                served.label_of,
                notes,
                job.report,
                job.cancel,
            )
            return self.save_footprint(rec)

        name = names[0] if b is None else f"{names[0]} vs {names[1]}"
        return self.jobs.submit("footprint", name, run, client)

    def save_footprint(self, rec: FootprintRecord) -> str:
        figure = rec.comparison.overlap if rec.comparison else None
        name = rec.names[0] if rec.names[1] is None else f"{rec.names[0]} vs {rec.names[1]}"
        rec.id = new_id()
        return self.db.save("footprint", rec.id, rec.model_id, name, rec.model_dump_json(), figure)

    def footprint(self, footprint_id: str) -> FootprintRecord | None:
        body = self._body("footprint", footprint_id)
        return FootprintRecord.model_validate_json(body) if body else None

    def footprint_from_file(self, name: str, data_b64: str, top: int = 50) -> FootprintRecord:
        """Read a footprint file (as `qscope footprint` writes it), sent as base64, and save its record."""
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ExamplesError(f"data_b64: not base64 ({e})") from e
        if len(data) > self.limits.max_file_bytes:
            raise ExamplesError(
                f"{name} is {len(data):,} bytes; files of at most {self.limits.max_file_bytes:,} bytes are read"
            )
        suffix = Path(name).suffix.lower()
        if suffix not in footprint_files.SUFFIXES:
            raise ExamplesError(f"{name}: give a .parquet or .duckdb file written by `qscope footprint`")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                f = footprint_files.read(path, name, self.upload_bounds)
            except footprint_files.FootprintFileError as e:
                raise ExamplesError(hide_paths(str(e), str(path), name)) from e
        labels = f.labels
        rec = record(
            f.meta["model_id"],
            f.a,
            f.b,
            f.by,
            f.share,
            top,
            lambda s, n: labels.get((s, n), ""),
            source=name,
            notes=f.meta["notes"],
        )
        self.save_footprint(rec)
        return rec

    def _saved_nothing(self) -> bool:
        """True while this server has not opened the app database and it is a SQLite file not yet made (reading it
        must not create it) or an in-memory one (new with this process)."""
        return self._db.opened is None and (is_in_memory(self.db_url) or is_missing_file(self.db_url))

    def body(self, kind: str, record_id: str) -> str | None:
        """The JSON body of a saved record of this kind, or None."""
        return self._body(kind, record_id)

    def _body(self, kind: str, record_id: str) -> str | None:
        return None if self._saved_nothing() else self.db.get(kind, record_id)

    def recent(self, kind: str, limit: int = 50) -> list[Listed]:
        """The newest saved records of a kind (none while nothing was ever saved)."""
        return [] if self._saved_nothing() else self.db.list(kind, limit)
