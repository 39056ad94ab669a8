"""Owner secrets of what people write (notes and lists): a random secret handed once to whoever made the thing
(the browser keeps it), of which the app database keeps only the SHA-256. Editing, deleting, or adding to a list
must show the secret; a row written before owners existed has no hash and cannot be changed by anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 24  # 32 URL-safe characters


class NotOwner(Exception):
    """A change asked for without the right owner secret; the message says what is missing."""


def new_secret() -> tuple[str, str]:
    """(secret, its hash): the secret goes to the writer once, the hash into the database."""
    token = secrets.token_urlsafe(SECRET_BYTES)
    return token, digest(token)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check(stored: str | None, given: str | None, what: str) -> None:
    """NotOwner unless `given` is the secret whose hash is `stored` (compared in constant time)."""
    if stored is None:
        raise NotOwner(f"This {what} was written before owner secrets existed: nobody can change it.")
    if not given:
        raise NotOwner(f"Changing this {what} needs its owner secret (the browser that made it keeps it).")
    if not hmac.compare_digest(digest(given), stored):
        raise NotOwner(f"That is not the owner secret of this {what}.")
