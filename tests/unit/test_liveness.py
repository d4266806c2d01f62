"""Nothing waits for ever: attempts no worker starts, jobs the queue lost (files queue,
in-process worker threads, the scripted LLM)."""

from __future__ import annotations

import base64
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crewbox.config import Settings
from crewbox.dlq import dead_letters
from crewbox.models import Artifact, Event, Plan, Request, Task
from crewbox.personas import load_personas, load_role_prompt
from crewbox.queue.files import FileQueue
from crewbox.runlog.files import FileRunLog
from crewbox.store import append_whole, sha256_hex, write_carried_artifact
from crewbox.testing import ScriptedLLM
from orchestrator.service import Orchestrator, ResultsDiskFullError
from tests.conftest import scripted_settings, spec
from worker.service import TaskRunner


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return scripted_settings(
        tmp_path,
        task_retries=1,
        heartbeat_timeout_s=3.0,  # beats come every second: some slack for a loaded machine
        start_timeout_s=2.0,
    )


class Crew:
    """An orchestrator over a FileQueue and worker threads started per persona on demand."""

    def __init__(self, settings: Settings, llm: ScriptedLLM) -> None:
        self.settings = settings
        self.llm = llm
        self.personas = load_personas(settings.prompts_dir)
        self.queue = FileQueue(settings.tasks_dir)
        self.stop = threading.Event()
        self.events: list[Event] = []
        self.log = FileRunLog(settings.results_dir)
        self.orchestrator = Orchestrator(
            settings,
            llm,
            self.queue,
            self.personas,
            load_role_prompt(settings.prompts_dir, "orchestrator"),
            load_role_prompt(settings.prompts_dir, "synthesizer"),
            self.log,
            on_event=self.events.append,
        )

    def start_worker(self, name: str) -> None:
        runner = TaskRunner(self.settings, self.personas[name], self.llm, f"test:{name}")
        threading.Thread(
            target=self.queue.serve,
            args=(name, runner),
            kwargs={"worker_id": f"test-{name}", "stop": self.stop},
            daemon=True,
        ).start()

    def of(self, kind: str, task_id: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind and e.task_id == task_id]


@pytest.fixture
def crew_of(settings: Settings) -> Iterator[type[Crew]]:
    made: list[Crew] = []

    def make(steps: list[dict[str, object]]) -> Crew:
        crew = Crew(settings, ScriptedLLM(steps))
        made.append(crew)
        return crew

    yield make  # type: ignore[misc]
    for crew in made:
        crew.stop.set()


def two_tasks() -> Request:
    plan = Plan.model_validate({"tasks": [spec("a", "marie"), spec("b", "anga")]})
    return Request(text="req", plan=plan)


def test_an_attempt_no_worker_starts_ends_in_the_dlq_and_dlq_retry_runs_it(
    crew_of: type[Crew], settings: Settings
) -> None:
    crew = crew_of(
        [
            {"match": "Task id: b", "text": "done b"},
            {"match": "## Results", "text": "partial answer"},
            {"match": "Task id: a", "text": "done a"},
            {"match": "## Results", "text": "whole answer"},
        ]
    )
    crew.start_worker("anga")  # marie has no worker
    began = time.monotonic()
    summary = crew.orchestrator.run(two_tasks())
    assert time.monotonic() - began < settings.start_timeout_s + 10
    status = {r.task_id: r.status for r in summary.tasks}
    assert status == {"a": "failed", "b": "succeeded"}
    (ended,) = crew.of("task_failed", "a")
    assert "no worker of persona marie is alive" in ended.message
    assert "CREWBOX_START_TIMEOUT_S" in ended.message
    assert len(crew.of("task_dispatched", "a")) == 1  # still queued: never dispatched twice
    (letter,) = dead_letters(crew.log.events(summary.run_id))
    assert letter.task_id == "a" and "no worker" in letter.error
    assert not list((settings.tasks_dir / "marie" / "pending").glob("*"))  # withdrawn

    crew.log.append(Event(kind="dlq_retried", run_id=summary.run_id, task_id="a", persona="marie"))
    crew.start_worker("marie")
    again = crew.orchestrator.resume(summary.run_id)
    assert {r.task_id: r.status for r in again.tasks} == {"a": "succeeded", "b": "succeeded"}
    assert not dead_letters(crew.log.events(summary.run_id))


def test_a_busy_worker_of_the_persona_keeps_its_queued_attempts_waiting(
    crew_of: type[Crew], settings: Settings
) -> None:
    plan = Plan.model_validate(
        {"tasks": [spec("a", "marie", priority="high"), spec("b", "marie", priority="low")]}
    )
    crew = crew_of(
        [
            {"match": "Task id: a", "text": "done a", "delay_s": settings.start_timeout_s + 2},
            {"match": "Task id: b", "text": "done b"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    crew.start_worker("marie")
    summary = crew.orchestrator.run(Request(text="req", plan=plan))
    assert summary.status == "succeeded"
    assert not [e for e in crew.events if e.kind == "attempt_lost"]


def test_a_job_the_queue_lost_is_dispatched_again(
    crew_of: type[Crew], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    crew = crew_of(
        [
            {"match": "Task id: a", "text": "done a"},
            {"match": "Task id: b", "text": "done b"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    enqueue = crew.queue.enqueue
    dropped: list[str] = []

    def lossy(task: Task) -> None:  # the first attempt of a never reaches the queue
        if task.task_id == "a" and not dropped:
            dropped.append(task.attempt_key)
            return
        enqueue(task)

    monkeypatch.setattr(crew.queue, "enqueue", lossy)
    crew.start_worker("marie")
    crew.start_worker("anga")
    summary = crew.orchestrator.run(two_tasks())
    assert summary.status == "succeeded"
    (lost,) = crew.of("attempt_lost", "a")
    assert "no longer on marie's queue" in lost.message
    assert len(crew.of("task_dispatched", "a")) == 2
    assert len(crew.of("task_dispatched", "b")) == 1


def test_the_files_queue_knows_what_is_waiting_and_who_serves(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path / "tasks")
    plan = Plan.model_validate({"tasks": [spec("a", "marie"), spec("b", "marie")]})
    tasks = [Task(run_id="r1", spec=s, request_text="req", context="") for s in plan.tasks]
    queue.enqueue(tasks[0])
    assert queue.waiting(tasks) == {tasks[0].attempt_key}
    assert queue.live_workers("marie") == 0
    stop = threading.Event()
    seen: list[int] = []

    def handler(task: Task, emit: object) -> None:
        seen.append(queue.live_workers("marie"))
        assert queue.waiting([task]) == {task.attempt_key}  # claimed counts as waiting
        stop.set()

    queue.serve("marie", handler, worker_id="host-1", stop=stop)  # type: ignore[arg-type]
    assert seen == [1]
    assert queue.live_workers("marie") == 0  # unregistered on the way out
    assert queue.waiting(tasks) == set()


class FullDisk:
    """Path.write_bytes that, while ``full``, leaves an empty file and fails with ENOSPC for
    paths under ``under`` whose name contains ``name`` (what a full disk does to a write)."""

    def __init__(self, under: Path, name: str) -> None:
        self.under, self.name, self.full, self.hits = under, name, True, 0
        self.real = Path.write_bytes

    def __call__(self, path: Path, data: bytes) -> int:
        if self.full and path.is_relative_to(self.under) and self.name in path.name:
            self.hits += 1
            path.touch()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return self.real(path, data)

    def method(self) -> Callable[[Path, bytes], int]:
        """``self`` as a function, so that it binds as a method of Path."""
        return lambda path, data: self(path, data)


def test_a_full_results_disk_stops_the_run_resumable_and_it_goes_on_once_space_is_back(
    crew_of: type[Crew], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    crew = crew_of(
        [
            {"match": "Task id: a", "text": "done a"},
            {"match": "Task id: a", "text": "done a again"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    disk = FullDisk(settings.results_dir, "result.json")
    monkeypatch.setattr(Path, "write_bytes", disk.method())
    crew.start_worker("marie")
    plan = Plan.model_validate({"tasks": [spec("a", "marie")]})
    with pytest.raises(ResultsDiskFullError, match="results disk is full") as caught:
        crew.orchestrator.run(Request(text="req", plan=plan))
    assert disk.hits == 1 and "No space left on device" in str(caught.value)
    run_id = crew.events[0].run_id
    assert not list(settings.results_dir.rglob("*result.json*"))  # nothing claims success
    (failed,) = [e for e in crew.log.events(run_id) if e.kind == "run_failed"]
    assert f"crewbox resume {run_id}" in failed.message
    low = shutil.disk_usage(settings.results_dir)._replace(free=1024)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: low)
    with pytest.raises(ResultsDiskFullError, match="1 KiB free"):  # still full: not resumed
        crew.orchestrator.resume(run_id)
    monkeypatch.undo()

    disk.full = False  # space is back
    monkeypatch.setattr(Path, "write_bytes", disk.method())
    summary = crew.orchestrator.resume(run_id)
    assert summary.status == "succeeded"
    assert (settings.results_dir / run_id / "marie" / "a" / "result.json").is_file()


def test_a_failed_write_leaves_no_empty_artifact_nor_half_an_event_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"artifact body"
    artifact = Artifact(path="out.md", bytes=len(data), sha256=sha256_hex(data))
    artifact.content_b64 = base64.b64encode(data).decode()
    monkeypatch.setattr(Path, "write_bytes", FullDisk(tmp_path, "out.md").method())
    with pytest.raises(OSError, match="No space left"):
        write_carried_artifact(tmp_path, artifact)
    assert list(tmp_path.iterdir()) == []  # no 0-byte out.md, no temporary file

    log = tmp_path / "events.jsonl"
    append_whole(log, b"first\n")
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: real_write(fd, b[:3]))  # a short write
    with pytest.raises(OSError, match="No space left"):
        append_whole(log, b"second line\n")
    monkeypatch.undo()
    assert log.read_bytes() == b"first\n"
