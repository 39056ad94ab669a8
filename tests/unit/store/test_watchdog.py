"""Query time limits: one watchdog thread interrupts a DuckDB cursor past its deadline, and only then."""

import threading
import time

import pytest

from qscope.store.queries import QueryTimeout, Store
from qscope.store.watchdog import WATCHDOG, Watchdog
from qscope.store.writer import write_store
from tests.helpers.stores import sae_tables
from tests.helpers.timing import FakeClock, wait_until

SLOW = "SELECT count(*) FROM range(3000000000) a, range(10) b WHERE (a.range * b.range) % 7 = 3"


def test_disarmed_tickets_never_fire_and_due_ones_do():
    clock = FakeClock()
    dog, fired = Watchdog(clock), []
    early = dog.arm(lambda: fired.append("early"), 0.05)
    dog.arm(lambda: fired.append("late"), 0.1)
    dog.disarm(early)
    clock.advance(0.4)  # both deadlines pass; the disarmed one comes first, so it would fire first
    wait_until(lambda: dog.pending() == 0, 5, "the due ticket to fire")
    assert fired == ["late"]
    done = threading.Event()
    dog.arm(done.set, 0.01)
    clock.advance(0.01)
    assert done.wait(2)


def test_a_query_past_the_limit_is_interrupted_and_the_store_still_answers(tmp_path):
    out = tmp_path / "s.duckdb"
    write_store(out, {}, [sae_tables("a")], ["x"])
    store = Store(out, timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(QueryTimeout, match="ran past 0.3 s"), store.reader() as r:
        r.cur.execute(SLOW).fetchall()
    assert time.monotonic() - start < 5
    with store.reader() as r:  # a quick query after it, on a new cursor, is not interrupted
        wait_until(lambda: WATCHDOG.pending() == 0, 5, "the reader's own limit to pass")  # it fired on the idle cursor
        assert r.row("a", 1).label == "label 1"
    store.close()
