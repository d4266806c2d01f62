"""A function called every few seconds in a thread while a ``with`` block runs: heartbeats,
lease renewals, watching a run for a cancel."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    """Calls ``tick()`` every ``interval_s`` seconds in a daemon thread while in a ``with``
    block (first call at once when ``first_now``); stops early once ``tick`` returns True.
    ``tick`` must not raise."""

    def __init__(
        self,
        interval_s: float,
        tick: Callable[[], bool | None],
        name: str,
        first_now: bool = False,
    ) -> None:
        self._interval_s = interval_s
        self._tick = tick
        self._first_now = first_now
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

    def __enter__(self) -> Periodic:
        if self._first_now and self._tick():
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self._interval_s):
            if self._tick():
                return
