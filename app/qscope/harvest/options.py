"""HarvestOptions: every setting of one harvest, checked in one place, and the harvest's error types."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from qscope.harvest.ids import url_safe


class HarvestError(RuntimeError):
    """A harvest that cannot run (bad input or option); the message is one line for the user."""


class HarvestInterrupted(HarvestError):
    """The harvest stopped early on purpose (``stop_after``); its checkpoint is saved for ``--resume``."""


@dataclass
class HarvestOptions:
    model: str  # hub id or checkpoint folder
    saes: list[Path]  # SAE files or folders (every SAE below a folder)
    corpus: str  # file, folder or Hugging Face dataset name
    out: Path  # the DuckDB file to write
    tokens: int = 1_000_000  # tokens to harvest (whole windows; fewer when the corpus is shorter)
    ctx: int = 128  # tokens per window (SAEDashboard's default)
    batch: int = 32  # windows per forward
    top_k: int = 32  # top contexts kept per feature
    # top contexts sharing at least this fraction of their tokens (aligned on the marked token) with a stronger
    # one count once (qscope.harvest.dedup); 0 keeps them all. With it on, the harvest follows top_pool
    # candidates per feature (1.5 x top_k) so that up to top_k distinct ones remain
    dedup: float = 0.8
    before: int = 32  # tokens of context kept before the marked token
    after: int = 8  # and after it
    skip_first: bool = True  # leave position 0 out of rankings and stats
    sink_norm_ratio: float = 10.0  # leave out tokens whose residual norm > ratio x the batch median; 0: keep
    seed: int = 0  # interval sampling keys derive from (seed, batch)
    device: str = "auto"
    dtype: str = "auto"
    checkpoint_every: int = 100  # batches between checkpoints; 0: never
    resume: bool = False  # continue from the checkpoint beside `out`
    stop_after: int | None = None  # stop (checkpointed) after this many batches of this call: tests, Ray
    interval_bins: int = 16
    interval_samples: int = 5  # per interval bin
    logit_tokens: int = 20  # top and bottom logit-effect tokens per feature
    neighbors: int = 10  # nearest features within the SAE
    cross_neighbors: int = 5  # nearest features in each SAE of the neighboring layers
    card_workers: int = 0  # processes that build the feature cards; 0: one per core (at most 16)
    model_id: str | None = None  # the model's name in URLs and pages; default: from `model` (qscope.harvest.ids)
    extra: dict = field(default_factory=dict)  # free-form notes copied into meta

    def validate(self) -> None:
        """Raise HarvestError naming the first option out of range."""
        at_least = {
            "tokens": 1,
            "ctx": 2,
            "batch": 1,
            "top_k": 1,
            "before": 0,
            "after": 0,
            "checkpoint_every": 0,
            "interval_bins": 1,
            "interval_samples": 1,
            "logit_tokens": 1,
            "neighbors": 0,
            "cross_neighbors": 0,
            "card_workers": 0,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                flag = "--" + name.replace("_", "-")
                raise HarvestError(f"{flag} must be at least {low}, got {getattr(self, name)}")
        if not 0 <= self.dedup <= 1:  # also catches NaN
            raise HarvestError(f"--dedup is a fraction of shared tokens between 0 and 1 (0 disables), got {self.dedup}")
        if not self.sink_norm_ratio >= 0:  # also catches NaN
            raise HarvestError(f"--sink-norm-ratio must be >= 0 (0 disables), got {self.sink_norm_ratio}")
        if self.stop_after is not None and self.stop_after < 1:
            raise HarvestError(f"--stop-after must be at least 1, got {self.stop_after}")
        if not self.saes:
            raise HarvestError("no SAE given: pass --sae with a file or folder")
        if self.model_id is not None and url_safe(self.model_id) != self.model_id:
            raise HarvestError(
                f"--model-id {self.model_id!r} must be URL-safe (letters, digits, '.', '_', '-'), "
                f"e.g. {url_safe(self.model_id)!r}"
            )
        if Path(self.out).is_dir():
            raise HarvestError(f"--out {self.out} is a folder; give the path of the .duckdb file to write")

    @property
    def top_pool(self) -> int:
        """Top-context candidates followed per feature: top_k, and half as many again to de-duplicate from."""
        return self.top_k + self.top_k // 2 if self.dedup > 0 else self.top_k

    @property
    def window(self) -> tuple[int, int]:
        """(before, after) as used: a context never reaches further than its window of ctx tokens."""
        return min(self.before, self.ctx - 1), min(self.after, self.ctx - 1)

    def settings(self) -> dict:
        """The options that decide the database's content (recorded in meta and checked on --resume)."""
        skip = {"out", "resume", "stop_after", "checkpoint_every", "card_workers", "extra"}
        values = {k: v for k, v in asdict(self).items() if k not in skip}
        values["saes"] = [str(p) for p in self.saes]
        return values
