"""Every URL the explorer links to, built in one place (routes, templates and JSON use these functions).

Pages are permalinks with a ``.json`` twin at the same path (``/x`` and ``/x.json``); actions and static
files live under ``/-/``. Names match everywhere: model_id, sae_id, feature.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

JSON = ".json"
STATIC_PREFIX = "/-/static"


def _query(params: dict[str, object] | None) -> str:
    if not params:
        return ""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return "?" + urlencode(kept, doseq=True) if kept else ""


def _seg(text: str) -> str:
    return quote(str(text), safe="")


def home(json: bool = False) -> str:
    return "/.json" if json else "/"


def sae(model_id: str, sae_id: str, json: bool = False, **params: object) -> str:
    return f"/{_seg(model_id)}/{_seg(sae_id)}{JSON if json else ''}{_query(params)}"


def feature(model_id: str, sae_id: str, feature: int, json: bool = False, **params: object) -> str:
    return f"/{_seg(model_id)}/{_seg(sae_id)}/{int(feature)}{JSON if json else ''}{_query(params)}"


def random_feature(model_id: str, sae_id: str) -> str:
    return f"/-/random/{_seg(model_id)}/{_seg(sae_id)}"


def search(q: str | None = None, json: bool = False, **params: object) -> str:
    return f"/search{JSON if json else ''}{_query({'q': q, **params})}"


def inspect(json: bool = False, **params: object) -> str:
    return f"/inspect{JSON if json else ''}{_query(params)}"


def steer_page(json: bool = False) -> str:
    """The steering page, empty."""
    return f"/steer{JSON if json else ''}"


def steer_feature(sae_id: str, feature: int) -> str:
    """What the steering page needs to know about one feature (label, max activation, dead or not), as JSON."""
    return f"/api/steer/feature/{_seg(sae_id)}/{int(feature)}"


def attribute(json: bool = False, **params: object) -> str:
    """Why this token? (text= or run= & side=, pos=, target=, contrast=, sae_id=...)."""
    return f"/attribute{JSON if json else ''}{_query(params)}"


def steer(sae_id: str, feature: int) -> str:
    """The steering page, with the feature to steer with in its query."""
    return f"/steer{_query({'sae_id': sae_id, 'feature': int(feature)})}"


def steer_run(run_id: str, json: bool = False) -> str:
    """A shared steering run's permalink."""
    return f"/steer/{_seg(run_id)}{JSON if json else ''}"


def static(path: str) -> str:
    return f"{STATIC_PREFIX}/{path}"
