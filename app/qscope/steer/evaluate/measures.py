"""What is measured on every generated row, and the confidence intervals over rows.

- Read-back (`read_back`): the prompt and its generated tokens run once more through the *unsteered* model; the
  perplexity of the generated tokens (exp of their mean negative log-likelihood given everything before them),
  and the concept: the SAE's target feature on those tokens, as the fraction where it fires (> 0) and its mean
  activation. No judge model: the model and the SAE themselves say how much the text expresses the feature.
- Text metrics (`text_metrics`): length, distinct-n and the longest repeated n-gram of the generated token ids,
  and when asked: required / forbidden terms, a regex (run by qscope.inputs.patterns, under a time limit), the
  share of the letters in a script.
- `interval`: mean and 95% Student-t confidence interval, NaN values left out.

Shapes: B rows, L padded length, K generated positions kept, V vocabulary, D d_model.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from qscope.inputs.patterns import UserPattern
from qscope.model import hooks
from qscope.sae import Sae
from qscope.steer.engine import left_pad
from qscope.steer.evaluate.request import TextMetrics

# two-sided 95% Student-t quantiles by degrees of freedom; past the table a Cornish-Fisher expansion
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]
_Z975 = 1.959964
SCRIPT_PREFIXES = {
    "latin": ("LATIN",),
    "cjk": ("CJK",),
    "kana": ("HIRAGANA", "KATAKANA"),
    "hangul": ("HANGUL",),
    "cyrillic": ("CYRILLIC",),
    "greek": ("GREEK",),
    "arabic": ("ARABIC",),
    "hebrew": ("HEBREW",),
    "devanagari": ("DEVANAGARI",),
    "thai": ("THAI",),
}


class MeanCI(NamedTuple):
    """A mean over rows with its 95% Student-t interval and the count of finite values (floats; NaN for none)."""

    mean: float
    lo: float
    hi: float
    n: int


class ReadBack(NamedTuple):
    """One row's read-back: mean NLL of its generated tokens, the fraction where the concept fires, and the
    concept's mean activation over them (NaN for a row that generated nothing)."""

    nll: float
    fires: float
    act: float


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def interval(values: Sequence[float]) -> MeanCI:
    """Mean and 95% confidence interval of the finite values (NaN bounds for none; zero width for one)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(mean, mean, mean, 1)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = t_quantile(n - 1) * math.sqrt(var / n)
    return MeanCI(mean, mean - half, mean + half, n)


@torch.no_grad()
def read_back(
    model: nn.Module,
    sae: Sae,
    feature: int,
    rows: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int = 0,
    lock: threading.Lock | None = None,
) -> list[ReadBack]:
    """Perplexity and concept of each (prompt ids, generated ids) row, in one batched forward of the model
    without any steering (see the module docstring)."""
    K = max((len(g) for _, g in rows), default=0)
    if K == 0:
        return [ReadBack(math.nan, math.nan, math.nan) for _ in rows]
    device = next(model.parameters()).device
    ids_BL, mask_BL = left_pad([list(p) + list(g) for p, g in rows], pad_id)
    ids_BL, mask_BL = ids_BL.to(device), mask_BL.to(device)
    pos_BL = (mask_BL.cumsum(-1) - 1).clamp_min(0)
    seen: dict[str, torch.Tensor] = {}

    def keep(h_BLD: torch.Tensor) -> None:
        seen["h"] = h_BLD

    with lock or nullcontext(), hooks(model, {sae.require_site(): keep}):
        # the last K+1 logits: position j predicts token j+1, so they cover the last K tokens (and one more)
        out = model(input_ids=ids_BL, attention_mask=mask_BL, position_ids=pos_BL, logits_to_keep=K + 1)
    logp_BKV = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    target_BK = ids_BL[:, -K:]
    nll_BK = -logp_BKV.gather(-1, target_BK[..., None])[..., 0]
    n_B = torch.tensor([len(g) for _, g in rows], device=device)
    valid_BK = torch.arange(K, device=device)[None, :] >= (K - n_B)[:, None]  # each row's last n tokens
    act_BK = sae.encode(seen["h"][:, -K:])[..., feature].float()
    count_B = valid_BK.sum(-1).clamp_min(1)
    nll_B = (nll_BK * valid_BK).sum(-1) / count_B
    fires_B = ((act_BK > 0) & valid_BK).sum(-1) / count_B
    mean_B = (act_BK * valid_BK).sum(-1) / count_B
    out_rows = []
    for b, n in enumerate(n_B.tolist()):
        if n == 0:
            out_rows.append(ReadBack(math.nan, math.nan, math.nan))
        else:
            out_rows.append(ReadBack(float(nll_B[b]), float(fires_B[b]), float(mean_B[b])))
    return out_rows


def distinct_n(ids: Sequence[int], n: int) -> float:
    """Distinct n-grams over all n-grams of the ids (NaN when there are fewer than n ids)."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def longest_repeat(ids: Sequence[int]) -> int:
    """Length of the longest n-gram that occurs at least twice in ids (overlaps allowed); 0 for none."""

    def repeats(n: int) -> bool:
        seen = set()
        for i in range(len(ids) - n + 1):
            gram = tuple(ids[i : i + n])
            if gram in seen:
                return True
            seen.add(gram)
        return False

    lo, hi = 0, max(len(ids) - 1, 0)  # a repeat of length n implies one of every shorter length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if repeats(mid) else (lo, mid - 1)
    return lo


def script_share(text: str, script: str) -> float:
    """The share of the text's letters that belong to `script` (NaN for a text with no letters)."""
    prefixes = SCRIPT_PREFIXES[script]
    letters = [ch for ch in text if unicodedata.category(ch).startswith("L")]
    if not letters:
        return math.nan
    return sum(unicodedata.name(ch, "").startswith(prefixes) for ch in letters) / len(letters)


def text_metrics(
    text: str, ids: Sequence[int], asked: TextMetrics, pattern: UserPattern | None = None
) -> dict[str, float]:
    """The text measures of one generated row: always length, distinct-n and longest repeat; the rest if asked.
    `pattern` is asked.regex compiled once per evaluation, so that its time budget covers every row; the regex
    measure is NaN (not measured) once the pattern has timed out."""
    out = {
        "tokens": float(len(ids)),
        "chars": float(len(text)),
        f"distinct_{asked.distinct_n}": distinct_n(ids, asked.distinct_n),
        "longest_repeat": float(longest_repeat(ids)),
    }
    low = text.lower()
    if asked.required:
        out["required"] = float(all(t.lower() in low for t in asked.required))
    if asked.forbidden:
        out["forbidden"] = float(any(t.lower() in low for t in asked.forbidden))
    if asked.regex:
        found = (pattern or UserPattern(asked.regex)).search(text)
        out["regex"] = math.nan if found is None else float(found)
    for script in asked.scripts:
        out[f"script_{script}"] = script_share(text, script)
    return out
