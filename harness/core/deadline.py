"""Deadlines on the monotonic clock, and polling with backoff (no bare sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A point in monotonic time after which a wait has failed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def poll(check: Callable[[], T | None], deadline: Deadline, *,
         first: float = 0.01, most: float = 0.5) -> T | None:
    """Call ``check`` until it returns something other than None or the deadline passes.

    The wait between calls doubles from ``first`` up to ``most`` so that fast events are
    seen quickly and slow ones do not burn a core.
    """
    delay = first
    while True:
        value = check()
        if value is not None:
            return value
        if deadline.expired():
            return None
        time.sleep(min(delay, deadline.remaining()))
        delay = min(delay * 2, most)
