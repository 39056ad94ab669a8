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


def steer(sae_id: str, feature: int, prompt: str | None = None) -> str:
    """The steering page, with the feature to steer with (and a prompt to start from) in its query."""
    return f"/steer{_query({'sae_id': sae_id, 'feature': int(feature), 'prompt': prompt})}"


def note(note_id: str, json: bool = False) -> str:
    """A note or explanation a person wrote on a feature."""
    return f"/notes/{_seg(note_id)}{JSON if json else ''}"


def note_api(note_id: str) -> str:
    """PATCH or DELETE (JSON, the owner secret in X-Owner-Secret): edit or delete a note."""
    return f"/api/notes/{_seg(note_id)}"


def notes_action() -> str:
    """POST (a form): write a note on a feature."""
    return "/-/notes"


def lists(json: bool = False, page: int = 1) -> str:
    """The lists of features people made, a page at a time (and the form for a new one)."""
    return f"/lists{JSON if json else ''}" + (f"?page={page}" if page > 1 else "")


def user_list(list_id: str, json: bool = False) -> str:
    return f"/lists/{_seg(list_id)}{JSON if json else ''}"


def list_api(list_id: str) -> str:
    """PATCH or DELETE (JSON, the owner secret in X-Owner-Secret): rename or delete a list."""
    return f"/api/lists/{_seg(list_id)}"


def lists_action() -> str:
    """POST (a form): make a list, with a first feature when the form names one."""
    return "/-/lists"


def list_items_action() -> str:
    """POST (a form): add a feature to a list."""
    return "/-/lists/items"


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


def discover(json: bool = False, **params: object) -> str:
    return f"/discover{JSON if json else ''}{_query(params)}"


def discovery(discovery_id: str, json: bool = False) -> str:
    return f"/discover/{_seg(discovery_id)}{JSON if json else ''}"


def fix(json: bool = False, **params: object) -> str:
    """The fix form (qscope.web.routes.fix), a demo set loaded with `demo`."""
    return f"/fix{JSON if json else ''}{_query(params)}"


def fix_result(fix_id: str, json: bool = False) -> str:
    return f"/fix/{_seg(fix_id)}{JSON if json else ''}"


def detectors(json: bool = False) -> str:
    return f"/detectors{JSON if json else ''}"


def detector(detector_id: str, json: bool = False) -> str:
    return f"/detectors/{_seg(detector_id)}{JSON if json else ''}"


def footprints(json: bool = False, **params: object) -> str:
    return f"/footprints{JSON if json else ''}{_query(params)}"


def footprint(footprint_id: str, json: bool = False) -> str:
    return f"/footprints/{_seg(footprint_id)}{JSON if json else ''}"


def job(job_id: str) -> str:
    """A background job's status (JSON), polled by the discover and footprint pages."""
    return f"/api/jobs/{_seg(job_id)}"


def static(path: str) -> str:
    return f"{STATIC_PREFIX}/{path}"


def api_docs() -> str:
    """The HTTP API, read from the server's OpenAPI schema."""
    return "/-/docs"


def openai_models() -> str:
    """The OpenAI-compatible API's model list (the way into /v1)."""
    return "/v1/models"
