"""An app-database store opened on first use: a server that never saves anything writes no database file, and
two threads that ask at once get the same store (the shared steering runs, recipes, notes and lists, discoveries
each hold theirs this way)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class OpenedOnFirstUse(Generic[T]):
    """`open_store()`'s store, opened once, by the first `get()`."""

    def __init__(self, open_store: Callable[[], T]) -> None:
        self._open = open_store
        self._store: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._store is None:
                self._store = self._open()
            return self._store

    @property
    def opened(self) -> T | None:
        """The store when it was opened already; None, without opening it, when not."""
        return self._store
