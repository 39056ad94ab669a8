"""A small labelled set of concept queries on the tiny default (/work/cache/tiny.duckdb's build: `qscope build-demo
--tiny` harvested), for concept search's precision at 10 (docs/reading.md, tests/integration/search/test_precision.py).

Which features are right for a query was read off their dashboards: the tokens a feature fires on most (the part
of its label before the arrow, strongest first). A feature is right when its strongest token is of the concept
and so are at least half of the tokens listed, e.g. for "numbers" layer0 #72 ("1 0 ·—") is right, layer0 #481
("·I", which only promotes digits) is not. The tiny model is a toy: few of its features are clean concepts, and
labels are of single tokens, so the set asks for token classes (digits, closing brackets, braces, newlines,
quotes), not for meanings it does not have.
"""

L0, L1 = "SAE-Res-mini-qwen-W512-L0_16__layer0", "SAE-Res-mini-qwen-W512-L0_16__layer1"


def _of(layer0: list[int], layer1: list[int]) -> set[tuple[str, int]]:
    return {(L0, f) for f in layer0} | {(L1, f) for f in layer1}


LABELLED: dict[str, set[tuple[str, int]]] = {
    "numbers": _of([15, 42, 72, 183, 203, 371, 407], [22, 72, 117, 139, 173, 232, 247, 249, 325, 378]),
    "closing bracket": _of([93, 146, 213, 463], [49, 104]),
    "opening curly brace": _of([317, 440, 447], [176, 412]),
    "new line": _of(
        [36, 44, 45, 47, 74, 110, 119, 150, 154, 190, 205, 222, 230, 252, 262, 300, 306, 356, 374, 382, 412, 429]
        + [433, 452, 466, 467, 499, 509],
        [14, 36, 44, 45, 47, 78, 86, 110, 113, 115, 166, 174, 175, 194, 252, 281, 300, 306, 327, 334, 344, 374]
        + [405, 428, 429, 467, 469, 475, 509],
    ),
    "quotation marks": _of([99, 262, 280], [14, 64, 201, 254, 291, 309, 334, 344, 345, 363, 365]),
}


def precision_at(ranked: list[tuple[str, int]], right: set[tuple[str, int]], k: int = 10) -> float:
    """The share of the first k results that are right (k in the denominator, however many came back)."""
    return sum(key in right for key in ranked[:k]) / k
