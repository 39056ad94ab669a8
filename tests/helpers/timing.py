"""Time in tests without sleeping: a clock moved by hand (`FakeClock`, for code that takes a
`clock: Callable[[], float]`) and `wait_until`, which waits for another thread to reach a point by polling a
condition up to a deadline, instead of a sleep long enough on a fast machine and too short on a loaded one."""

import time
from collections.abc import Callable


class FakeClock:
    """A monotonic clock that stands still until a test moves it (`advance`, or set `now`)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "", poll_s: float = 0.01) -> None:
    """Return as soon as `condition()` is true, looking every poll_s (longer for a condition that costs a request);
    fail the test when it is still false after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what or condition}"
        time.sleep(poll_s)
