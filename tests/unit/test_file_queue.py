"""The files backend: each task taken by exactly one worker, results back to the run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from crewbox.models import Event, Result, Task, TaskSpec, WorkerEvent
from crewbox.queue.base import Emit
from crewbox.queue.files import FileQueue


def make_task(run_id: str, task_id: str, priority: str = "normal") -> Task:
    spec = TaskSpec(id=task_id, persona="marie", title=task_id, instructions="x", priority=priority)  # type: ignore[arg-type]
    return Task(run_id=run_id, spec=spec, request_text="req")


def echo(worker: str, seen: list[tuple[str, str]]) -> object:
    def handler(task: Task, emit: Emit) -> Result:
        seen.append((worker, task.task_id))
        emit(Event(kind="task_started", run_id=task.run_id, task_id=task.task_id))
        return Result(
            run_id=task.run_id,
            task_id=task.task_id,
            persona=task.persona,
            status="succeeded",
            worker=worker,
        )

    return handler


def test_two_workers_of_one_persona_never_run_the_same_task(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    for i in range(60):
        queue.enqueue(make_task("r1", f"t{i}"))
    seen: list[tuple[str, str]] = []
    workers = [
        threading.Thread(
            target=queue.serve,
            args=("marie", echo(f"w{n}", seen)),
            kwargs={"worker_id": f"w{n}", "burst": True},
        )
        for n in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    task_ids = [t for _, t in seen]
    assert sorted(task_ids) == sorted(f"t{i}" for i in range(60))
    assert len(set(task_ids)) == 60
    messages = queue.receive("r1", timeout_s=1)
    assert sum(isinstance(m, Result) for m in messages) == 60
    events = [m for m in messages if isinstance(m, WorkerEvent)]
    assert len(events) == 60
    assert all(e.token and e.attempt == 1 for e in events)  # sent with the attempt's token
    assert queue.receive("r1", timeout_s=0) == []


def test_high_priority_is_taken_first(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    queue.enqueue(make_task("r", "late", "low"))
    queue.enqueue(make_task("r", "normal"))
    queue.enqueue(make_task("r", "urgent", "high"))
    seen: list[tuple[str, str]] = []
    queue.serve("marie", echo("w", seen), worker_id="w", burst=True)  # type: ignore[arg-type]
    assert [t for _, t in seen] == ["urgent", "normal", "late"]


def test_receive_wakes_on_a_result_from_another_thread(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    queue.enqueue(make_task("r", "a"))
    seen: list[tuple[str, str]] = []
    worker = threading.Thread(
        target=queue.serve,
        args=("marie", echo("w", seen)),
        kwargs={"worker_id": "w", "burst": True},
    )
    worker.start()
    messages: list[object] = []
    while not any(isinstance(m, Result) for m in messages):
        messages += queue.receive("r", timeout_s=5)
    worker.join(5)
    assert seen == [("w", "a")]


def test_tasks_claimed_by_a_dead_worker_are_put_back(tmp_path: Path) -> None:
    queue = FileQueue(tmp_path)
    queue.enqueue(make_task("r", "orphan"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_id = f"{os.uname().nodename}-{dead.stdout.strip()}"
    assert queue._claim_next("marie", dead_id) is not None
    assert not list((tmp_path / "marie" / "pending").glob("*.json"))
    recovered = queue.recover_orphans("marie")
    assert [p.name.endswith("-r-orphan-a1.json") for p in recovered] == [True]
