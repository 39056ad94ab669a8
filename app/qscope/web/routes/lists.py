"""Lists of features people make: a name, a description, features each with a note. `/lists` shows them, a page
of PAGE_SIZE at a time (`?page=`), and makes a new one; `/lists/{id}` is a list's permalink; both have `.json`
twins. Made with forms (POST /-/lists, POST /-/lists/items, also from a feature page) or the JSON API (POST
/api/lists, POST /api/lists/{id}/items, PATCH and DELETE /api/lists/{id}).

Adding to, editing and deleting a list take its owner secret (as notes do: qscope.web.routes.notes): the form's
`owner_secret` field, or the X-Owner-Secret header of the JSON API.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from qscope.explain.notes import ListItem, UserList
from qscope.explain.service import Explained, ExplanationLine
from qscope.web import rates, urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep
from qscope.web.errors import Unprocessable
from qscope.web.forms import form_fields
from qscope.web.render import render
from qscope.web.routes.notes import (
    SECRET_MAX,
    TEXT_MAX,
    ExplainedDep,
    OwnerHeader,
    feature_of,
    keep_fragment,
    validated,
)
from qscope.web.twins import TwinRoute

MAX_ITEMS = 1000
PAGE_SIZE = 50  # lists on one page of /lists
MAX_PAGE = 100_000


class ItemIn(BaseModel):
    model_id: str | None = Field(None, max_length=200, description="Default: the model the SAE belongs to.")
    sae_id: str = Field(max_length=300)
    feature: int = Field(ge=0, le=2**31 - 1)
    note: str = Field("", max_length=TEXT_MAX, description="Why this feature is on the list.")


class ListIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=TEXT_MAX)
    features: list[ItemIn] = Field(default_factory=list, max_length=MAX_ITEMS)


class ListEdit(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200, description="Default: unchanged.")
    description: str | None = Field(None, max_length=TEXT_MAX, description="Default: unchanged.")


class ItemForm(ItemIn):
    list_id: str = Field(min_length=1, max_length=40)
    owner_secret: str = Field("", max_length=SECRET_MAX)


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


class CreatedList(SavedList):
    owner_secret: str = Field(description="Adds to, edits and deletes the list (X-Owner-Secret); shown this once.")


@dataclass
class ListPageRow:
    item: ListItem
    url: str
    label: str  # '' when this server does not serve the SAE
    explanation: ExplanationLine | None


@dataclass
class ListPage:
    list: UserList  # named as the JSON twin shows it; the annotations below name the builtin through builtins
    rows: builtins.list[ListPageRow]
    saes: builtins.list[tuple[str, str]]  # (model_id, sae_id) served here, for the add form
    urls: dict  # self, json, lists


@dataclass
class ListsPage:
    lists: list[UserList]
    page: int
    pages: int
    total: int
    urls: dict  # self, json, and prev / next when there are such pages


def _item(catalog: Catalog, it: ItemIn) -> ListItem:
    return ListItem(feature_of(catalog, it.model_id, it.sae_id, it.feature), it.sae_id, it.feature, it.note.strip())


def _name(name: str) -> str:
    if not name.strip():
        raise Unprocessable("Bad parameter: name is empty: give the list a name.")
    return name.strip()


def _saved(lst: UserList) -> SavedList:
    items = [vars(i) for i in lst.items]
    return SavedList(id=lst.id, url=urls.user_list(lst.id), name=lst.name, description=lst.description, features=items)


def _no_list(list_id: str) -> NotFound:
    return NotFound(f"No list {list_id!r}.", [("lists", urls.lists())], what="pages")


router = APIRouter(route_class=TwinRoute)
api = APIRouter(prefix="/api/lists", tags=["lists"])


@router.post("/-/lists", include_in_schema=False, dependencies=[rates.WRITE_WORDS])
async def new_list_form(request: Request, catalog: CatalogDep, explained: ExplainedDep):
    form = validated(NewListForm, await form_fields(request))
    items = []
    if form.sae_id and form.feature is not None:
        items = [
            _item(catalog, ItemIn(model_id=form.model_id, sae_id=form.sae_id, feature=form.feature, note=form.note))
        ]
    lst, key = explained.notes.create_list(_name(form.name), form.description.strip(), items)
    return RedirectResponse(f"{urls.user_list(lst.id)}#{keep_fragment('list', lst.id, key)}", status_code=303)


@router.post("/-/lists/items", include_in_schema=False, dependencies=[rates.WRITE_WORDS])
async def add_item_form(request: Request, catalog: CatalogDep, explained: ExplainedDep):
    form = validated(ItemForm, await form_fields(request))
    lst = explained.notes.add_item(form.list_id, _item(catalog, form), form.owner_secret)
    if lst is None:
        raise _no_list(form.list_id)
    return RedirectResponse(urls.user_list(lst.id), status_code=303)


@api.post(
    "", status_code=201, response_model=CreatedList, summary="Make a list of features", dependencies=[rates.WRITE_WORDS]
)
def new_list_api(body: ListIn, catalog: CatalogDep, explained: ExplainedDep) -> CreatedList:
    items = [_item(catalog, it) for it in body.features]
    lst, key = explained.notes.create_list(_name(body.name), body.description.strip(), items)
    return CreatedList(**_saved(lst).model_dump(), owner_secret=key)


@api.post(
    "/{list_id}/items",
    response_model=SavedList,
    summary="Add a feature to a list (its owner secret)",
    dependencies=[rates.WRITE_WORDS],
)
def add_item_api(
    list_id: str, body: ItemIn, catalog: CatalogDep, explained: ExplainedDep, owner: OwnerHeader = None
) -> SavedList:
    lst = explained.notes.add_item(list_id, _item(catalog, body), owner)
    if lst is None:
        raise _no_list(list_id)
    return _saved(lst)


@api.patch(
    "/{list_id}",
    response_model=SavedList,
    summary="Rename or describe a list (its owner secret)",
    dependencies=[rates.WRITE_WORDS],
)
def edit_list_api(list_id: str, body: ListEdit, explained: ExplainedDep, owner: OwnerHeader = None) -> SavedList:
    store = explained.notes_if_any()
    lst = store.get_list(list_id) if store is not None else None
    if store is None or lst is None:
        raise _no_list(list_id)
    name = _name(body.name) if body.name is not None else lst.name
    description = body.description.strip() if body.description is not None else lst.description
    edited = store.edit_list(list_id, owner, name, description)
    if edited is None:
        raise _no_list(list_id)
    return _saved(edited)


@api.delete(
    "/{list_id}",
    status_code=204,
    summary="Delete a list and its items (its owner secret)",
    dependencies=[rates.WRITE_WORDS],
)
def delete_list_api(list_id: str, explained: ExplainedDep, owner: OwnerHeader = None) -> Response:
    store = explained.notes_if_any()
    if store is None or not store.delete_list(list_id, owner):
        raise _no_list(list_id)
    return Response(status_code=204)


@router.get("/lists")
def lists_page(
    request: Request,
    explained: ExplainedDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Which page of lists, newest first.")] = 1,
):
    store = explained.notes_if_any()
    total = store.count_lists() if store else 0
    pages = max(1, -(-total // PAGE_SIZE))
    shown = store.lists(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE) if store and page <= pages else []
    links = {"self": urls.lists(page=page), "json": urls.lists(json=True, page=page)}
    if page > 1:
        links["prev"] = urls.lists(page=min(page, pages + 1) - 1)
    if page < pages:
        links["next"] = urls.lists(page=page + 1)
    data = ListsPage(shown, page, pages, total, links)
    return render(request, "lists.html", {"p": data}, data=data)


def _rows(catalog: Catalog, explained: Explained, items: list[ListItem]) -> list[ListPageRow]:
    """A row per item, with its label and explanation line; explanations looked up once per SAE, not per item."""
    served_of, lines = {}, {}
    for key in dict.fromkeys((it.model_id, it.sae_id) for it in items):
        try:
            served_of[key] = served = catalog.sae(*key)
        except NotFound:
            continue
        features = sorted({it.feature for it in items if (it.model_id, it.sae_id) == key})
        lines[key] = explained.lines(served.store, key[0], key[1], features)
    rows = []
    for it in items:
        key, label, line = (it.model_id, it.sae_id), "", None
        shown = served_of.get(key)
        if shown is not None and 0 <= it.feature < shown.sae.d_sae:
            label = shown.store.label(it.sae_id, it.feature)
            line = lines[key].get(it.feature)
        rows.append(ListPageRow(it, urls.feature(it.model_id, it.sae_id, it.feature), label, line))
    return rows


@router.get("/lists/{list_id}")
def list_page(request: Request, list_id: str, catalog: CatalogDep, explained: ExplainedDep):
    store = explained.notes_if_any()
    lst = store.get_list(list_id) if store is not None else None
    if lst is None:
        raise _no_list(list_id)
    saes = [(m.model_id, s.sae.sae_id) for m in catalog for s in m.saes]
    links = {
        "self": urls.user_list(lst.id),
        "json": urls.user_list(lst.id, json=True),
        "lists": urls.lists(),
        "api": urls.list_api(lst.id),
    }
    data = ListPage(lst, _rows(catalog, explained, lst.items), saes, links)
    return render(request, "list.html", {"p": data}, data=data)


router.include_router(api)
