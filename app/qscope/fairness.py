"""A fair share of queued work between clients: the decision of who waits, who is refused and who goes next.

Each client (its address, as the rate limiter of qscope.web.security keys it) may have at most `per_client`
items waiting, all clients together `capacity`. Items leave in start-time fair order: an item's tag is one cost
past the later of its client's previous tag and the tag of the last item taken, and the smallest tag goes
first (ties: the earlier arrival). So each client's items leave in its own order, a client that sends 24 requests
at once queues them behind each other, and a newcomer waits for at most one item of each other client, not for
the whole flood. A cost (e.g. the rows of a generation) shares work rather than requests.

Pure: no threads, no clocks, no sleeping; requests in, order out (tests/unit/test_fairness.py). Its users hold their
own lock around it: the steering worker (qscope.steer.worker) and the job runner (qscope.jobs: discoveries,
footprints, steering evaluations). It sits at the bottom of the package, beside config, because
qscope.steer and qscope.discover both use it and neither may import the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueRefused(Exception):
    """Not admitted. `mine`: the client's own share is full (only that client must wait: HTTP 429); else the
    whole queue is (everyone waits: HTTP 503)."""

    def __init__(self, message: str, mine: bool) -> None:
        super().__init__(message)
        self.mine = mine


@dataclass
class _Entry(Generic[T]):
    tag: float  # virtual start time: smaller leaves first
    seq: int  # arrival order, for ties
    client: str
    item: T


class FairQueue(Generic[T]):
    """Items of many clients, bounded per client and in all, taken in fair order (see the module docstring)."""

    def __init__(self, capacity: int, per_client: int | None = None) -> None:
        self.capacity = max(0, capacity)
        self.per_client = capacity if per_client is None or per_client <= 0 else per_client
        self._entries: list[_Entry[T]] = []
        self._virtual = 0.0  # the tag of the last item taken
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, client: str) -> int:
        """Items of `client` waiting."""
        return sum(1 for e in self._entries if e.client == client)

    def add(self, client: str, item: T, cost: float = 1.0, what: str = "requests") -> None:
        """Queue `item` of `client`; QueueRefused when its share, or the queue, is full (`what` names the items)."""
        mine = [e for e in self._entries if e.client == client]
        if len(mine) >= self.per_client:
            raise QueueRefused(
                f"{len(mine)} of your {what} are waiting already (at most {self.per_client} per client); "
                "try again when one ends",
                mine=True,
            )
        if len(self._entries) >= self.capacity:
            raise QueueRefused(
                f"the queue is full ({len(self._entries)} {what} waiting); try again shortly", mine=False
            )
        last = max((e.tag for e in mine), default=0.0)
        self._seq += 1
        self._entries.append(_Entry(max(last, self._virtual) + max(cost, 0.0), self._seq, client, item))

    def take(self, fits: Callable[[T], bool] | None = None) -> T | None:
        """The next item in fair order (of those that `fits`, when given), removed; None when there is none."""
        chosen = None
        for e in self._entries:
            if (fits is None or fits(e.item)) and (chosen is None or (e.tag, e.seq) < (chosen.tag, chosen.seq)):
                chosen = e
        if chosen is None:
            return None
        self._entries.remove(chosen)
        self._virtual = max(self._virtual, chosen.tag)
        return chosen.item

    def remove(self, item: T) -> bool:
        """Withdraw a waiting item (its request gave up, or was cancelled); False when it is not waiting."""
        for e in self._entries:
            if e.item is item:
                self._entries.remove(e)
                return True
        return False

    def order(self) -> list[T]:
        """The waiting items in the order they would be taken."""
        return [e.item for e in sorted(self._entries, key=lambda e: (e.tag, e.seq))]
