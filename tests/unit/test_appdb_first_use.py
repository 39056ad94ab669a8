"""qscope.appdb.first_use: a store is opened by the first get() only, once however many threads ask at once, and
`opened` looks without opening."""

import threading
import time

from qscope.appdb.first_use import OpenedOnFirstUse


def test_the_store_is_opened_once_by_the_first_get_of_many_threads():
    made = []

    def open_store() -> object:
        time.sleep(0.05)  # a slow open: the other threads arrive while it runs
        made.append(object())
        return made[-1]

    lazy = OpenedOnFirstUse(open_store)
    assert lazy.opened is None and made == []  # looking opens nothing
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(lazy.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and got == made * 8 and lazy.opened is made[0]
