"""The one type of every float a request model carries: `Finite`, a JSON number that is finite.

Pydantic's default float takes the string "NaN" (and "1e999", "inf"), so a NaN could reach the logits or a stored
result that no page can render again; it also takes `true` as 1.0. `Finite` is strict (a JSON number or a Python
int or float, never a string or a bool) and refuses NaN and the infinities; Field bounds (ge, le, ...) combine
with it as with a plain float. `finite` is the same rule for a number an upload reader finds.

Counts are pydantic's StrictInt where a string or 2.0 must not pass as an integer (the OpenAI-compatible API).
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AllowInfNan, Strict

Finite = Annotated[float, Strict(), AllowInfNan(False)]


def finite(value: float) -> float:
    """The value when it is finite; ValueError naming it otherwise (NaN, Infinity, a number past the float range)."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value
