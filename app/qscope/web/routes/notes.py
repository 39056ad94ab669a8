"""People's own explanations and notes on a feature: written with the feature page's form (POST /-/notes) or the
JSON API (POST /api/notes), each with a permalink /notes/{id} and its `.json` twin. The feature page shows them
beside the automatic explanation; search finds them.

Whoever writes one gets its owner secret once (qscope.explain.owners): in the JSON answer, or, after the form, in
the fragment of the page it goes to (`#keep=note.ID.SECRET`: never sent to a server, kept in the browser's
localStorage by static/owners.js). PATCH and DELETE /api/notes/{id} take it in the X-Owner-Secret header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field, ValidationError

from qscope.explain.notes import Note
from qscope.explain.service import Explained, ExplanationLine
from qscope.web import rates, urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep
from qscope.web.errors import Unprocessable
from qscope.web.forms import form_fields
from qscope.web.render import render
from qscope.web.twins import TwinRoute

TEXT_MAX = 2000
AUTHOR_MAX = 80
SECRET_MAX = 100  # longer than any secret made (qscope.explain.owners), so a longer one is simply wrong


def get_explained(request: Request) -> Explained:
    return request.app.state.explained


ExplainedDep = Annotated[Explained, Depends(get_explained)]
OwnerHeader = Annotated[
    str | None,
    Header(alias="X-Owner-Secret", max_length=SECRET_MAX, description="The owner secret returned when it was made."),
]


def keep_fragment(kind: str, thing_id: str, secret: str) -> str:
    """The URL fragment that hands a form's writer the owner secret (static/owners.js keeps it, then drops it)."""
    return f"keep={kind}.{thing_id}.{secret}"


class NoteIn(BaseModel):
    model_id: str | None = Field(None, max_length=200, description="Default: the model the SAE belongs to.")
    sae_id: str = Field(max_length=300)
    feature: int = Field(ge=0, le=2**31 - 1)
    text: str = Field(min_length=1, max_length=TEXT_MAX, description="What the feature does, in your words.")
    kind: Literal["explanation", "note"] = Field("note", description="An explanation of the feature, or a note.")
    author: str = Field("", max_length=AUTHOR_MAX, description="Your name (optional).")


class NoteEdit(BaseModel):
    text: str | None = Field(None, min_length=1, max_length=TEXT_MAX, description="Default: unchanged.")
    kind: Literal["explanation", "note"] | None = Field(None, description="Default: unchanged.")
    author: str | None = Field(None, max_length=AUTHOR_MAX, description="Default: unchanged.")


class SavedNote(BaseModel):
    id: str
    url: str
    feature_url: str


class CreatedNote(SavedNote):
    owner_secret: str = Field(description="Edits and deletes the note (X-Owner-Secret); shown this once only.")


@dataclass
class NotePage:
    note: Note
    label: str  # the feature's label ('' when this server does not serve its SAE)
    explanation: ExplanationLine | None
    urls: dict  # self, json, feature


def validated(model: type[BaseModel], fields: dict[str, str]):
    """A form's fields as `model`; Unprocessable naming each bad field."""
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        parts = [f"{'.'.join(str(x) for x in err['loc']) or 'form'}: {err['msg']}" for err in e.errors()]
        raise Unprocessable("Bad parameter: " + "; ".join(parts)) from None


def feature_of(catalog: Catalog, model_id: str | None, sae_id: str, feature: int) -> str:
    """The model_id of a served feature (NotFound, saying what exists, when it is not served here)."""
    if not model_id:
        served = catalog.find_sae(sae_id)
        if served is None:
            raise NotFound(f"No SAE {sae_id!r} is served here.", [("models", urls.home())], what="pages")
        model_id = served.sae.model_id
    catalog.check_feature(catalog.sae(model_id, sae_id), feature)
    return model_id


def _text(text: str) -> str:
    if not text.strip():
        raise Unprocessable("Bad parameter: text is empty: write what the feature does, or a note.")
    return text.strip()


def save_note(body: NoteIn, catalog: Catalog, explained: Explained) -> tuple[Note, str]:
    text, author = _text(body.text), body.author.strip()
    model_id = feature_of(catalog, body.model_id, body.sae_id, body.feature)
    return explained.notes.add_note(model_id, body.sae_id, body.feature, text, body.kind, author)


def _saved(note: Note) -> SavedNote:
    return SavedNote(
        id=note.id, url=urls.note(note.id), feature_url=urls.feature(note.model_id, note.sae_id, note.feature)
    )


def _no_note(note_id: str) -> NotFound:
    return NotFound(f"No note {note_id!r}.", [("lists", urls.lists())], what="pages")


router = APIRouter(route_class=TwinRoute)
api = APIRouter(prefix="/api/notes", tags=["notes"])


@router.post("/-/notes", include_in_schema=False, dependencies=[rates.WRITE_WORDS])
async def note_form(request: Request, catalog: CatalogDep, explained: ExplainedDep):
    note, key = save_note(validated(NoteIn, await form_fields(request)), catalog, explained)
    page = urls.feature(note.model_id, note.sae_id, note.feature)
    return RedirectResponse(f"{page}#words&{keep_fragment('note', note.id, key)}", status_code=303)


@api.post(
    "",
    status_code=201,
    response_model=CreatedNote,
    summary="Write a note or explanation on a feature",
    dependencies=[rates.WRITE_WORDS],
)
def note_api(body: NoteIn, catalog: CatalogDep, explained: ExplainedDep) -> CreatedNote:
    note, key = save_note(body, catalog, explained)
    return CreatedNote(**_saved(note).model_dump(), owner_secret=key)


@api.patch(
    "/{note_id}",
    response_model=SavedNote,
    summary="Edit a note (its owner secret in X-Owner-Secret)",
    dependencies=[rates.WRITE_WORDS],
)
def edit_note_api(note_id: str, body: NoteEdit, explained: ExplainedDep, owner: OwnerHeader = None) -> SavedNote:
    store = explained.notes_if_any()
    note = store.note(note_id) if store is not None else None
    if store is None or note is None:
        raise _no_note(note_id)
    text = _text(body.text) if body.text is not None else note.text
    author = body.author.strip() if body.author is not None else note.author
    edited = store.edit_note(note_id, owner, text, body.kind or note.kind, author)
    if edited is None:
        raise _no_note(note_id)
    return _saved(edited)


@api.delete(
    "/{note_id}",
    status_code=204,
    summary="Delete a note (its owner secret in X-Owner-Secret)",
    dependencies=[rates.WRITE_WORDS],
)
def delete_note_api(note_id: str, explained: ExplainedDep, owner: OwnerHeader = None) -> Response:
    store = explained.notes_if_any()
    if store is None or not store.delete_note(note_id, owner):
        raise _no_note(note_id)
    return Response(status_code=204)


@router.get("/notes/{note_id}")
def note_page(request: Request, note_id: str, catalog: CatalogDep, explained: ExplainedDep):
    store = explained.notes_if_any()
    note = store.note(note_id) if store is not None else None
    if note is None:
        raise _no_note(note_id)
    label, line = "", None
    try:
        served = catalog.sae(note.model_id, note.sae_id)
    except NotFound:
        served = None
    if served is not None:
        label = served.store.label(note.sae_id, note.feature)
        line = explained.lines(served.store, note.model_id, note.sae_id, [note.feature]).get(note.feature)
    links = {
        "self": urls.note(note.id),
        "json": urls.note(note.id, json=True),
        "feature": urls.feature(note.model_id, note.sae_id, note.feature),
        "api": urls.note_api(note.id),
    }
    data = NotePage(note, label, line, links)
    return render(request, "note.html", {"p": data}, data=data)


router.include_router(api)
