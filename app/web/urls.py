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


def attribute(json: bool = False, **params: object) -> str:
    """Why this token? (text= or run= & side=, pos=, target=, contrast=, sae_id=...)."""
    return f"/attribute{JSON if json else ''}{_query(params)}"


def steer(sae_id: str, feature: int) -> str:
    """The steering page, with the feature to steer with in its query."""
    return f"/steer{_query({'sae_id': sae_id, 'feature': int(feature)})}"


def steer_run(run_id: str, json: bool = False) -> str:
    """A shared steering run's permalink."""
    return f"/steer/{_seg(run_id)}{JSON if json else ''}"


def steer_eval(**params: object) -> str:
    """The steering evaluation form, prefilled from its query (sae_id and feature, or a whole `spec` as JSON)."""
    return f"/steer-eval{_query(params)}"


def steer_eval_job(job_id: str, json: bool = False) -> str:
    return f"/steer-eval/{_seg(job_id)}{JSON if json else ''}"


def steer_eval_events(job_id: str) -> str:
    return f"/api/steer-eval/{_seg(job_id)}/events"


def steer_eval_cancel(job_id: str) -> str:
    return f"/api/steer-eval/{_seg(job_id)}/cancel"


def recipes(json: bool = False) -> str:
    return f"/recipes{JSON if json else ''}"


def recipe(recipe_id: str, json: bool = False, md: bool = False) -> str:
    return f"/recipes/{_seg(recipe_id)}{JSON if json else ''}{'.md' if md else ''}"


def recipe_run_again(recipe_id: str) -> str:
    return f"/api/recipes/{_seg(recipe_id)}/run-again"


def static(path: str) -> str:
    return f"{STATIC_PREFIX}/{path}"
