"""Lists of features people make: a name, a description, features each with a note. `/lists` shows them all (and
makes a new one), `/lists/{id}` is a list's permalink; both have `.json` twins. Made with forms (POST /-/lists,
POST /-/lists/items, also from a feature page) or the JSON API (POST /api/lists, POST /api/lists/{id}/items).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from qscope.explain.notes import ListItem, UserList
from qscope.explain.service import Explained, ExplanationLine
from qscope.web import urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep
from qscope.web.errors import Unprocessable
from qscope.web.forms import form_fields
from qscope.web.render import render
from qscope.web.routes.notes import TEXT_MAX, ExplainedDep, feature_of, validated
from qscope.web.twins import TwinRoute

MAX_ITEMS = 1000


class ItemIn(BaseModel):
    model_id: str | None = Field(None, max_length=200, description="Default: the model the SAE belongs to.")
    sae_id: str = Field(max_length=300)
    feature: int = Field(ge=0, le=2**31 - 1)
    note: str = Field("", max_length=TEXT_MAX, description="Why this feature is on the list.")


class ListIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=TEXT_MAX)
    features: list[ItemIn] = Field(default_factory=list, max_length=MAX_ITEMS)


class ItemForm(ItemIn):
    list_id: str = Field(min_length=1, max_length=40)


class NewListForm(BaseModel):
    """The new-list form: a name and description, and a first feature when it comes from a feature page."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=TEXT_MAX)
    model_id: str | None = Field(None, max_length=200)
    sae_id: str | None = Field(None, max_length=300)
    feature: int | None = Field(None, ge=0, le=2**31 - 1)
    note: str = Field("", max_length=TEXT_MAX)


class SavedList(BaseModel):
    id: str
    url: str
    name: str
    description: str
    features: list[dict]


@dataclass
class ListRow:
    item: ListItem
    url: str
    label: str  # '' when this server does not serve the SAE
    explanation: ExplanationLine | None


@dataclass
class ListPage:
    list: UserList  # named as the JSON twin shows it; the annotations below name the builtin through builtins
    rows: builtins.list[ListRow]
    saes: builtins.list[tuple[str, str]]  # (model_id, sae_id) served here, for the add form
    urls: dict  # self, json, lists


@dataclass
class ListsPage:
    lists: list[UserList]
    urls: dict  # self, json


def _item(catalog: Catalog, it: ItemIn) -> ListItem:
    return ListItem(feature_of(catalog, it.model_id, it.sae_id, it.feature), it.sae_id, it.feature, it.note.strip())


def _name(name: str) -> str:
    if not name.strip():
        raise Unprocessable("Bad parameter: name is empty: give the list a name.")
    return name.strip()


def _saved(lst: UserList) -> SavedList:
    items = [vars(i) for i in lst.items]
    return SavedList(id=lst.id, url=urls.user_list(lst.id), name=lst.name, description=lst.description, features=items)


router = APIRouter(route_class=TwinRoute)
api = APIRouter(prefix="/api/lists", tags=["lists"])


@router.post("/-/lists", include_in_schema=False)
async def new_list_form(request: Request, catalog: CatalogDep, explained: ExplainedDep):
    form = validated(NewListForm, await form_fields(request))
    items = []
    if form.sae_id and form.feature is not None:
        items = [
            _item(catalog, ItemIn(model_id=form.model_id, sae_id=form.sae_id, feature=form.feature, note=form.note))
        ]
    lst = explained.notes.create_list(_name(form.name), form.description.strip(), items)
    return RedirectResponse(urls.user_list(lst.id), status_code=303)


@router.post("/-/lists/items", include_in_schema=False)
async def add_item_form(request: Request, catalog: CatalogDep, explained: ExplainedDep):
    form = validated(ItemForm, await form_fields(request))
    lst = explained.notes.add_item(form.list_id, _item(catalog, form))
    if lst is None:
        raise NotFound(f"No list {form.list_id!r}.", [("lists", urls.lists())], what="pages")
    return RedirectResponse(urls.user_list(lst.id), status_code=303)


@api.post("", status_code=201, response_model=SavedList, summary="Make a list of features")
def new_list_api(body: ListIn, catalog: CatalogDep, explained: ExplainedDep) -> SavedList:
    items = [_item(catalog, it) for it in body.features]
    return _saved(explained.notes.create_list(_name(body.name), body.description.strip(), items))


@api.post("/{list_id}/items", response_model=SavedList, summary="Add a feature to a list")
def add_item_api(list_id: str, body: ItemIn, catalog: CatalogDep, explained: ExplainedDep) -> SavedList:
    lst = explained.notes.add_item(list_id, _item(catalog, body))
    if lst is None:
        raise NotFound(f"No list {list_id!r}.", [("lists", urls.lists())], what="pages")
    return _saved(lst)


@router.get("/lists")
def lists_page(request: Request, explained: ExplainedDep):
    store = explained.notes_if_any()
    data = ListsPage(store.lists() if store else [], {"self": urls.lists(), "json": urls.lists(json=True)})
    return render(request, "lists.html", {"p": data}, data=data)


def _rows(catalog: Catalog, explained: Explained, items: list[ListItem]) -> list[ListRow]:
    rows = []
    for it in items:
        label, line = "", None
        try:
            served = catalog.sae(it.model_id, it.sae_id)
        except NotFound:
            served = None
        if served is not None and 0 <= it.feature < served.sae.d_sae:
            label = served.store.label(it.sae_id, it.feature)
            line = explained.lines(served.store, it.model_id, it.sae_id, [it.feature]).get(it.feature)
        rows.append(ListRow(it, urls.feature(it.model_id, it.sae_id, it.feature), label, line))
    return rows


@router.get("/lists/{list_id}")
def list_page(request: Request, list_id: str, catalog: CatalogDep, explained: ExplainedDep):
    store = explained.notes_if_any()
    lst = store.get_list(list_id) if store is not None else None
    if lst is None:
        raise NotFound(f"No list {list_id!r}.", [("lists", urls.lists())], what="pages")
    saes = [(m.model_id, s.sae.sae_id) for m in catalog for s in m.saes]
    links = {"self": urls.user_list(lst.id), "json": urls.user_list(lst.id, json=True), "lists": urls.lists()}
    data = ListPage(lst, _rows(catalog, explained, lst.items), saes, links)
    return render(request, "list.html", {"p": data}, data=data)


router.include_router(api)
