"""Responses: one `render()` for a full page, its htmx partial or its `.json` twin, and the template helpers.

Templates never query: routes hand them dataclasses. Jinja autoescapes everything; the only HTML built in
Python is in `tokens_html` (every token string goes through `escape`) and in qscope.web.plots (numbers only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from qscope.tokens import EMPTY, VISIBLE, code_points, marks_only, visible
from qscope.web import plots, urls
from qscope.web.twins import wants_json


def _asset_dir(name: str) -> Path:
    """templates/ and static/ sit at the top of a source checkout (beside app/) and inside the package of an
    installed wheel (pyproject.toml's force-include puts them there)."""
    packaged = Path(str(files("qscope"))) / name
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / name


TEMPLATES_DIR = _asset_dir("templates")
STATIC_DIR = _asset_dir("static")
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def is_partial(request: Request) -> bool:
    """An htmx request for a fragment (a history restore wants the whole page)."""
    h = request.headers
    return h.get("HX-Request") == "true" and h.get("HX-History-Restore-Request") != "true"


def jsonable(obj: Any) -> Any:
    """Dataclasses, lists and dicts as JSON values; NaN and infinities become null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    data: Any,
    partial: str | None = None,
    status: int = 200,
) -> Response:
    """The `.json` twin (data), the htmx partial, or the full page; always `Vary: HX-Request`."""
    if wants_json(request):
        response: Response = JSONResponse(jsonable(data), status_code=status)
    else:
        fragment = partial if partial and is_partial(request) else None
        context = {**context, "hx": fragment is not None}
        response = templates.TemplateResponse(request, fragment or template, context, status_code=status)
    response.headers["Vary"] = "HX-Request"
    return response


def tokens_html(
    tokens: Sequence[str],
    acts: Sequence[float],
    max_act: float,
    mark: int | None = None,
    around: int | None = None,
    shown: Sequence[str] | None = None,
) -> Markup:
    """A context as token spans shaded by activation (--a in 0..1), value on hover, the marked token boxed.

    `tokens` are each token's text on its own (its value, on hover); `shown` each token's piece of the whole
    context (qscope.tokens.readable: a character split over tokens appears on the token completing it, and the
    tokens before it are drawn as thin marks). With `around`, tokens further than that from `mark` get class
    "far" (hidden until the row is expanded). Built as one string (a dashboard holds thousands of tokens);
    every token goes through `_token_text` and `_token_title`, which escape it.
    """
    inv = 1.0 / max_act if max_act > 0 else 0.0
    text, title = _token_text, _token_title
    shown = tokens if shown is None else shown
    n = min(len(tokens), len(acts), len(shown))
    lo, hi = (mark - around, mark + around) if around is not None and mark is not None else (0, n)
    out = []
    for i in range(n):  # one f-string per token: this loop is most of a dashboard's render time
        tok, act, piece = tokens[i], acts[i], shown[i]
        cls = "t mx" if i == mark else ("t" if lo <= i <= hi else "t far")
        if piece != tok:  # part of a character split over tokens
            cls += " part" if piece == "" and tok else ""
            hover = f' title="{title(tok, piece)}{f" {act:.3f}" if act > 0 else ""}"'
        else:
            hover = f' title="{title(tok)} {act:.3f}"' if act > 0 else ""  # bare whole tokens stay small
        shade = f' style="--a:{min(act * inv, 1.0):.2f}"' if act > 0 else ""
        out.append(f'<span class="{cls}"{shade}{hover}>{text(piece) if piece or not tok else ""}</span>')
    return Markup("".join(out))


@lru_cache(maxsize=1 << 18)
def _token_title(tok: str, shown: str | None = None) -> str:
    return str(escape(piece_title(tok if shown is None else shown, tok)))


@lru_cache(maxsize=1 << 18)
def _token_text(tok: str) -> str:
    """Escaped token text with whitespace runs wrapped as faint visible glyphs (cached: a vocabulary is
    finite and a page holds thousands of tokens)."""
    if not tok:
        return f'<i class="ws">{EMPTY}</i>'
    if marks_only(tok):  # a variation selector or a joiner alone: its code point, not an empty box
        return f'<i class="ws">{escape(code_points(tok))}</i>'
    out, run = [], []
    for ch in tok:
        if ch in VISIBLE:
            run.append(VISIBLE[ch])
            continue
        if run:
            out.append(f'<i class="ws">{"".join(run)}</i>')
            run = []
        out.append(str(escape(ch)))
    if run:
        out.append(f'<i class="ws">{"".join(run)}</i>')
    return "".join(out)


def pct(x: float | None) -> str:
    """A density as a percentage with 3 significant digits ('0.0123%')."""
    if x is None or not math.isfinite(x):
        return "–"
    if x == 0:
        return "0%"
    return f"{x * 100:.3g}%"


def of_max(rel: float) -> Markup:
    """An activation over the feature's harvested max as a percentage; above 100% marked and explained (the text
    is stronger than anything in the harvest), not left as an unexplained '116%'."""
    if rel > 1:
        why = f"above the largest activation in the harvest: {rel:.2f} x it"
        return Markup(f'<span class="above" title="{escape(why)}">{rel * 100:.0f}% ▲</span>')
    return Markup(f"{rel * 100:.0f}%")


def num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


templates.env.globals.update(urls=urls, plots=plots, tokens_html=tokens_html)


def token_markup(tok: str) -> Markup:
    """One token as escaped HTML with its whitespace shown."""
    return Markup(_token_text(tok))


def piece_markup(piece: str, tok: str) -> Markup:
    """A token's piece of a text (qscope.tokens.readable) as escaped HTML: empty for a token holding only the
    first bytes of a character (the page draws a thin mark), ∅ for a token that is empty itself."""
    return Markup("" if piece == "" and tok else _token_text(piece))


def piece_title(piece: str, tok: str) -> str:
    """The hover title of a token shown as `piece` (its value; both where they differ). Autoescaped."""
    if piece == tok:
        return repr(tok)
    if piece == "":
        return f"{tok!r}: bytes of a character split over tokens (shown where it completes, or cut off at an edge)"
    return f"{tok!r} → {piece!r} (with the bytes of the tokens before it)"


def short_sae(sae_id: str) -> str:
    """The distinguishing end of an sae_id ('SAE-Res-...-L0_50__layer12' -> 'layer12') for dense tables."""
    return sae_id.rsplit("__", 1)[-1]


templates.env.filters.update(
    short_sae=short_sae, pct=pct, num=num, visible=visible, tok=token_markup, rep=repr, of_max=of_max
)
templates.env.globals.update(piece=piece_markup, piece_title=piece_title)
