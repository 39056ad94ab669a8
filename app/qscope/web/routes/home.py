"""`/`: where to start (one working example per thing qscope does, picked from the served store at request time),
then the models and SAEs served, with their sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request

from qscope.store.paths import shown_path
from qscope.store.schema import SaeInfo
from qscope.web import urls
from qscope.web.catalog import Catalog
from qscope.web.deps import CatalogDep, LiveDep, SettingsDep
from qscope.web.render import render
from qscope.web.routes.discover import demo_infos
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)


@dataclass
class SaeSummary:
    sae: SaeInfo
    url: str
    live: int  # features that fired
    db: str  # the store file


@dataclass
class ModelSummary:
    model_id: str
    n_features: int
    saes: list[SaeSummary]


@dataclass
class Step:
    """One thing to try first: what it is, a link that works on what is served, and what the link shows."""

    name: str
    url: str
    what: str


@dataclass
class Home:
    models: list[ModelSummary]
    stores: list[dict]
    start: list[Step]  # "start here": one example per capability, on the first model served


WHY_TEXT = "The cat sat on the mat because it was warm."  # any tokenizer makes more than 4 tokens of it
STEER_PROMPT = "Once upon a time"
SEARCH_WORDS = ("number", "return", "time", "the", "and")  # tried before the example feature's own top tokens


def _example_feature(catalog: Catalog, model_id: str) -> tuple[str, int, str] | None:
    """(sae_id, feature, a search word) from the model's middle SAE: its densest feature among those firing on at
    most a fifth of the tokens (one that shows on most texts without firing on everything), read now, so the
    links never name a dead feature. The word: the first of a few common words (then of its top tokens) that a
    feature label of that SAE holds, so the search finds something."""
    saes = catalog.model(model_id).saes
    for s in saes[len(saes) // 2 :] + saes[: len(saes) // 2]:
        with s.store.reader() as r:
            rows = r.features(s.sae.sae_id, sort="density", desc=True, dmax=0.2, limit=1).rows
            rows = rows or r.features(s.sae.sae_id, sort="density", desc=True, limit=1).rows
            if not rows or rows[0].n_fired == 0:
                continue
            words = [t.strip() for t in rows[0].top_tokens if len(t.strip()) >= 3 and t.strip().isalpha()]
            found = (w for w in [*SEARCH_WORDS, *words] if r.features(s.sae.sae_id, q=w, limit=1).rows)
            return s.sae.sae_id, rows[0].feature, next(found, SEARCH_WORDS[0])
    return None


def start_here(catalog: Catalog, live) -> list[Step]:
    """The short path a newcomer takes, each step with one example that works on the first model served."""
    model_id = next((m.model_id for m in catalog), None)
    found = _example_feature(catalog, model_id) if model_id else None
    if model_id is None or found is None:
        return []
    sae_id, feature, word = found
    steps = [
        Step("Browse", urls.feature(model_id, sae_id, feature), f"feature #{feature} of {sae_id}: where it fires"),
        Step("Search", urls.search(word), f"features for \u201c{word}\u201d, by label, meaning and firing"),
    ]
    if live.get(model_id) is not None:  # the model itself is served: the steps that run it
        demo = next(iter(demo_infos(live, model_id)), None)
        steps += [
            Step(
                "Steer",
                urls.steer(sae_id, feature, prompt=STEER_PROMPT),
                f"generate with feature #{feature} pushed up, beside the default",
            ),
            Step(
                "Evaluate",
                urls.steer_eval(sae_id=sae_id, feature=feature, model_id=model_id),
                "measure that steer over a prompt set against controls: a verdict and a recipe",
            ),
            Step(
                "Discover",
                demo.url if demo else urls.discover(),
                f"the features that tell {demo.a_name} from {demo.b_name}"
                if demo
                else "the features that tell two sets of examples apart",
            ),
            Step(
                "Fix",
                urls.fix(demo=demo.name) if demo else urls.fix(),
                "raise or lower a behaviour: its top features and DiffMean evaluated as steers, ranked, a recipe",
            ),
            Step(
                "Why this token?",
                urls.attribute(text=WHY_TEXT, pos=4),
                "the features that made the model predict a token, and a test of the cause",
            ),
        ]
    return steps


@router.get("/")
def home_page(request: Request, catalog: CatalogDep, live: LiveDep, settings: SettingsDep):
    def shown(path: str | None, store: Path) -> str | None:
        return path if settings.server.show_paths else shown_path(path, store)

    models = [
        ModelSummary(
            m.model_id,
            m.n_features,
            [
                SaeSummary(s.sae, urls.sae(m.model_id, s.sae.sae_id), s.sae.d_sae - s.sae.dead, s.store.path.name)
                for s in m.saes
            ],
        )
        for m in catalog
    ]
    stores = [
        {
            "file": st.path.name,
            "bytes": st.path.stat().st_size,
            "tokens": st.meta.get("tokens"),
            "corpus": shown(st.meta.get("corpus"), st.path),
            "created_at": st.meta.get("created_at"),
            "model": shown(st.model_source, st.path),
        }
        for st in catalog.stores
    ]
    data = Home(models, stores, start_here(catalog, live))
    return render(request, "index.html", {"home": data}, data=data)
