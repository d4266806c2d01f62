"""Wake-ups on folder changes with watchfiles, instead of polling loops; polling (by
watchfiles too) only where the OS has no file watch left (inotify's per-user limits)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import watchfiles

DEBOUNCE_MS = 10
"""watchfiles debounce: with the defaults (1600 ms, step 50) a renamed-in file is seen after
~810 ms p50; with debounce 10 and step 2, after ~4 ms (measured on a 2-core machine)."""

STEP_MS = 2
"""watchfiles step between checks for more changes while debouncing."""

RECHECK_MS = 250
"""Longest wait before the caller lists the folder again: covers a change that lands between
a listing and the watcher's start."""

POLL_MS = 100
"""How often a folder is listed when no OS file watch could be had."""

log = logging.getLogger("crewbox.queue")


class DirWatcher:
    """Blocks until something changes in ``folder`` (or ``RECHECK_MS`` passes).

    A KeyboardInterrupt raised while it waits propagates (watchfiles would otherwise swallow
    it and end the watch, which left callers spinning); the caller's own SIGINT handler
    decides what Ctrl-C means.
    """

    def __init__(self, folder: Path, stop: threading.Event | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._stop = stop
        self.polling = False
        """True once the OS refused a watch (e.g. "Too many open files": inotify's
        max_user_instances) and the folder is polled every POLL_MS instead."""
        self._changes = self._watch()

    def _watch(self) -> Iterator[set[tuple[watchfiles.Change, str]]]:
        return watchfiles.watch(
            self._folder,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=RECHECK_MS,
            yield_on_timeout=True,
            stop_event=self._stop,
            raise_interrupt=True,
            force_polling=self.polling or None,
            poll_delay_ms=POLL_MS,
        )

    def wait(self) -> bool:
        """Wait for a change or the recheck interval; False once the stop event is set.

        Raises:
            OSError: not even polling could watch the folder.
        """
        if self._stop is not None and self._stop.is_set():
            return False
        try:
            return next(self._changes, None) is not None
        except (OSError, RuntimeError) as exc:  # RuntimeError: watchfiles' internal errors
            if self.polling:
                raise
            log.warning(
                "cannot watch %s (%s); polling it every %d ms instead (raise "
                "fs.inotify.max_user_instances / max_user_watches to watch it)",
                self._folder,
                exc,
                POLL_MS,
            )
            self.polling = True
            self._changes = self._watch()
            return True  # the caller lists the folder again

    def close(self) -> None:
        """Stop watching (releases the watcher's thread and inotify handles)."""
        close = getattr(self._changes, "close", None)
        if close is not None:
            close()
