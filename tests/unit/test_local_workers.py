"""Embedded workers on demand (crewbox.local) and the folder watcher's polling fallback,
with real worker processes and real folders."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crewbox import local
from crewbox.local import LocalWorkers, last_line
from crewbox.models import Event
from crewbox.queue import watch
from crewbox.queue.files import FileQueue
from tests.conftest import ROOT


def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` holds (observable state), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "script.yaml"
    script.write_text("[]\n")
    return {
        "CREWBOX_PROMPTS_DIR": str(ROOT / "prompts"),
        "CREWBOX_WORKSPACES_DIR": str(ROOT / "workspaces"),
        "CREWBOX_TASKS_DIR": str(tmp_path / "tasks"),
        "CREWBOX_RESULTS_DIR": str(tmp_path / "results"),
        "CREWBOX_PROVIDER": "scripted",
        "CREWBOX_QUEUE": "files",
        "CREWBOX_SCRIPT_PATH": str(script),
    }


def dispatched(persona: str) -> Event:
    return Event(kind="task_dispatched", run_id="r1", task_id="t", persona=persona)


def test_workers_start_on_dispatch_within_the_cap_and_waiting_personas_count_as_served(
    tmp_path: Path, env: dict[str, str]
) -> None:
    queue = FileQueue(tmp_path / "tasks")
    with LocalWorkers((), tmp_path / "logs", env, max_workers=1) as workers:
        assert workers.processes == {}  # nothing before the first dispatch
        workers.on_event(Event(kind="plan_ready", run_id="r1"))
        workers.on_event(dispatched("marie"))
        workers.on_event(dispatched("anga"))
        assert workers.running() == {"marie"} and workers.waiting == ["anga"]
        assert queue.live_workers("anga") == 1  # promised: its tasks wait, not fail
        until(lambda: queue.live_workers("marie") == 1)  # marie's worker serves
        until(lambda: workers.running() == {"anga"})  # marie idle: stopped for anga
        assert workers.started == 2 and "fabien" not in workers.running()
        until(lambda: queue.live_workers("anga") == 1 and not workers.waiting)
    assert "stopped (idle)" in (tmp_path / "logs" / "marie.log").read_text()
    until(lambda: queue.live_workers("anga") == 0 and queue.live_workers("marie") == 0)


def test_a_worker_that_cannot_start_says_why_in_one_line(
    tmp_path: Path, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "crewbox.local")
    with LocalWorkers(["nosuch"], tmp_path / "logs", env) as workers:
        until(lambda: not workers.processes)  # given up after START_TRIES quick exits
    lines = [r.getMessage() for r in caplog.records]
    assert "exited with 2: crewbox: error: unknown persona 'nosuch'" in lines[0]
    assert len(lines) == local.START_TRIES and workers.restarts == local.START_TRIES - 1
    assert "cannot start (exit 2, 3 times): crewbox: error: unknown persona" in lines[-1]
    assert "not started again" in lines[-1] and not any("\n" in line for line in lines)
    assert last_line(tmp_path / "nothing.log") == "no output"


def test_the_default_cap_is_twice_the_cores_at_least_8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local.os, "cpu_count", lambda: 2)
    assert local.default_max_workers() == 8
    monkeypatch.setattr(local.os, "cpu_count", lambda: 16)
    assert local.default_max_workers() == 32


@pytest.fixture
def no_inotify(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """watchfiles as on a host whose inotify instances are used up: every watch that is
    not polling fails with EMFILE when it starts."""
    real = watch.watchfiles.watch
    refused: list[Any] = []

    def watch_or_fail(*args: Any, **kw: Any) -> Any:
        if kw.get("force_polling"):
            return real(*args, **kw)
        refused.append(args)

        def fail() -> Iterator[Any]:
            raise OSError(errno.EMFILE, "Too many open files")
            yield  # a generator, as watchfiles' is

        return fail()

    monkeypatch.setattr(watch.watchfiles, "watch", watch_or_fail)
    yield refused


def test_a_watcher_polls_when_the_os_has_no_watch_left(
    tmp_path: Path, no_inotify: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "crewbox.queue")
    stop = threading.Event()
    watcher = watch.DirWatcher(tmp_path / "pending", stop)
    assert watcher.wait() is True and watcher.polling  # first wait: falls back, lists again
    assert no_inotify and "polling it every" in caplog.text
    threading.Timer(0.3, (tmp_path / "pending" / "task.json").touch).start()
    began = time.monotonic()
    while not (tmp_path / "pending" / "task.json").exists():
        assert watcher.wait()
    assert time.monotonic() - began < 5
    stop.set()
    assert watcher.wait() is False
    watcher.close()
