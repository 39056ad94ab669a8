"""What `qscope explain` does, below its command line (qscope.cli): choose the features, build the explainer and
the pool of non-firing contexts, run, and sum up. Bad input raises ExplainUsage with one line to show."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from qscope.explain.client import OpenAIChat
from qscope.explain.negatives import NegativePool, build_pool
from qscope.explain.runner import ExplainOptions, ExplainRunner, ExplainSummary, Key
from qscope.explain.store import ExplanationWriter, explanations_path
from qscope.progress import PhaseProgress
from qscope.store.queries import Store

LOG_EVERY_S = 5.0  # in a log, the longest silence of a run between two progress lines


class ExplainUsage(ValueError):
    """A choice on the command line that cannot work; the message says which and why."""


@dataclass
class FeatureChoice:
    """Which features to explain: an SAE's (or every SAE's) live features, a list of indices, the densest N,
    or the features of a user list."""

    sae_ids: list[str]
    features: str | None = None  # "1,2,5-9"
    top: int | None = None
    keys: list[Key] | None = None  # from a user list


@dataclass
class Explainer:
    endpoint: str | None = None
    model: str | None = None
    hf: str | None = None
    scorer_model: str | None = None
    api_key: str | None = None
    timeout_s: float = 120.0
    retries: int = 4
    device: str = "auto"


def parse_features(text: str) -> list[int]:
    """'1,2,5-9' -> [1, 2, 5, 6, 7, 8, 9]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ExplainUsage(f"--features: {part!r} is not a feature index or a range like 5-9")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo > 1_000_000:
            raise ExplainUsage(f"--features: the range {part} is empty or too long")
        out += range(lo, hi + 1)
    return list(dict.fromkeys(out))


def choose(store: Store, choice: FeatureChoice) -> list[Key]:
    """The (sae_id, feature) keys to explain, in order."""
    unknown = [s for s in choice.sae_ids if s not in store.saes]
    if unknown:
        raise ExplainUsage(f"no SAE {unknown[0]!r} in {store.path.name}; it has: {', '.join(store.saes)}")
    sae_ids = choice.sae_ids or list(store.saes)
    if choice.keys is not None:
        return [k for k in choice.keys if k[0] in sae_ids]
    if choice.features:
        wanted = parse_features(choice.features)
        return [(s, f) for s in sae_ids for f in wanted if f < store.saes[s].d_sae]
    out: list[Key] = []
    with store.reader(timeout_s=120) as r:
        for s in sae_ids:
            order = "density DESC, feature" if choice.top else "feature"
            limit = f"LIMIT {int(choice.top)}" if choice.top else ""
            rows = r.cur.execute(
                f"SELECT feature FROM features WHERE sae_id = ? AND n_fired > 0 ORDER BY {order} {limit}", [s]
            ).fetchall()
            out += [(s, f) for (f,) in rows]
    return out


def make_chats(ex: Explainer):
    """(explainer, scorer) from the command line's choice."""
    if ex.hf:
        from qscope.explain.local import LocalChat

        chat = LocalChat(ex.hf, device=ex.device)
        return chat, chat
    if not ex.endpoint or not ex.model:
        raise ExplainUsage(
            "give --endpoint URL and --explainer-model NAME (an OpenAI-compatible server), or --hf MODEL"
        )
    key = ex.api_key or os.environ.get("OPENAI_API_KEY")
    explainer = OpenAIChat(ex.endpoint, ex.model, key, timeout_s=ex.timeout_s, retries=ex.retries)
    scorer = explainer
    if ex.scorer_model and ex.scorer_model != ex.model:
        scorer = OpenAIChat(ex.endpoint, ex.scorer_model, key, timeout_s=ex.timeout_s, retries=ex.retries)
    return explainer, scorer


def negative_pool(
    store: Store, keys: Sequence[Key], opts: ExplainOptions, size: int, device: str, say
) -> NegativePool | None:
    """The pool for detection scores, or None (with a line saying why) when the store's model cannot run here."""
    sae_ids = list(dict.fromkeys(k[0] for k in keys))
    t0 = time.monotonic()
    say(f"negatives: running {store.model_source} on {size} contexts of the store for {len(sae_ids)} SAE(s)")
    try:
        pool = build_pool(store, sae_ids, n=size, length=opts.before + opts.after + 1, seed=opts.seed, device=device)
    except Exception as e:  # noqa: BLE001 - scoring goes on without detection, and says why
        say(f"warning: no detection scores: the store's model or SAEs could not run here ({e})")
        return None
    say(f"negatives: {len(pool.tokens)} contexts in {time.monotonic() - t0:.1f} s")
    return pool


def run_explain(
    db: Path,
    out: Path | None,
    choice: FeatureChoice,
    ex: Explainer,
    opts: ExplainOptions,
    pool_size: int,
    console: Console,
) -> ExplainSummary:
    """The whole command; the explanations file is `out` or the one beside `db`."""
    store = Store(db, timeout_s=60)
    writer = None
    try:
        keys = choose(store, choice)
        if not keys:
            raise ExplainUsage("no features chosen: the SAEs have no live feature matching the choice")
        writer = ExplanationWriter(out or explanations_path(db))

        def say(text: str, style: str = "") -> None:
            console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)

        explainer, scorer = make_chats(ex)
        runner = ExplainRunner(store, writer, explainer, scorer if opts.score else None, None, opts)
        todo, skipped = runner.plan(keys)
        say(
            f"explain: {len(keys)} features chosen, {skipped} already done, {len(todo)} to do; explainer "
            f"{explainer.name}, {opts.concurrency} in flight; writing {writer.path}"
        )
        if opts.score and todo:
            runner.pool = negative_pool(store, [k for k, _ in todo], opts, pool_size, ex.device, say)
        with PhaseProgress(console, every_s=LOG_EVERY_S) as runner.progress:
            return runner.run(keys)
    finally:
        if writer is not None:
            writer.close()
        store.close()
