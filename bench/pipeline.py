"""crewbox's whole pipeline, measured: the real Orchestrator in this process, real
``crewbox worker`` processes (started by crewbox.local.LocalWorkers, as ``crewbox run``
starts them), and ScriptedLLM (CREWBOX_PROVIDER=scripted) answering each call after the
delay its step says, through the production client stack (retry, the concurrency limiter,
the budget wrapper).

A :class:`Pipeline` is one backend (``files`` or ``rq``) with ``workers`` processes of one
persona (``marie``, from prompts/). Its script holds, for each :class:`Phase`, as many
steps as the phase has tasks (every worker process loads its own copy and consumes it in
order; a step matches only its phase's tasks by a marker in their instructions), and the
synthesizer's steps (instant) first. Each run is a plan given up front, like ``--plan``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from crewbox.cli import cluster_run_log, orchestrator
from crewbox.config import Settings
from crewbox.local import LocalWorkers
from crewbox.models import (
    END_KIND,
    Event,
    Plan,
    Request,
    Result,
    RunSummary,
    Task,
    TaskSpec,
    WorkerEvent,
)
from crewbox.personas import Persona, load_personas
from crewbox.procs import process_id
from crewbox.queue import make_queue
from orchestrator.service import LeaseKeeper

ROOT = Path(__file__).resolve().parent.parent
PERSONA = "marie"
SYNTH_MATCH = "You are the synthesizer of crewbox"
"""A line of prompts/synthesizer.md: the synthesizer's calls take the synthesizer's steps."""

WARM_DELAY_S = 0.2
"""Each warm-up task's LLM delay: long enough that every ready worker takes one."""

WARM_TRIES = 5
"""Warm-up runs at most, until every worker process has run a task."""

TASK_END_KINDS = frozenset(END_KIND.values())


class BenchError(Exception):
    """A measurement could not be taken (a run did not succeed, a worker never started)."""


@dataclass(frozen=True)
class Phase:
    """Tasks that share an LLM delay: ``tasks`` steps of ``delay_s`` seconds each."""

    name: str
    tasks: int
    delay_s: float

    @property
    def marker(self) -> str:
        """The text in a task's instructions that its phase's steps match."""
        return f"[bench phase {self.name}]"


@dataclass
class RunTiming:
    """One run: ``makespan_s`` from ``Orchestrator.run`` called to the last task's end
    event (plan given, dispatch, workers, results, artifacts written; the synthesis
    after it is left out); its summary."""

    makespan_s: float
    summary: RunSummary
    workers_seen: set[str] = field(default_factory=set)


def script_steps(phases: list[Phase]) -> list[dict[str, Any]]:
    """The ScriptedLLM steps: the synthesizer's (each run's Orchestrator loads the script
    afresh, so one is enough), then each phase's task steps. Repeated steps are one object,
    which YAML writes once and refers to (a short file, quick to load)."""
    steps: list[dict[str, Any]] = [{"match": SYNTH_MATCH, "text": "answer"}]
    for phase in phases:
        step = {"match": phase.marker, "text": "done", "delay_s": phase.delay_s}
        steps += [step] * phase.tasks
    return steps


def plan_of(phase: Phase, tasks: int) -> Plan:
    """``tasks`` independent tasks of ``phase`` for the bench persona."""
    specs = [
        TaskSpec(
            id=f"t{i}", persona=PERSONA, title=f"t{i}", instructions=f"Do t{i}. {phase.marker}"
        )
        for i in range(tasks)
    ]
    return Plan(tasks=specs)


class Pipeline:
    """A backend with ``workers`` warm worker processes (a context manager).

    ``redis_url`` is needed for ``rq``. Raises BenchError on enter when the workers do
    not all come up.
    """

    def __init__(
        self,
        backend: str,
        workers: int,
        phases: list[Phase],
        redis_url: str | None = None,
    ) -> None:
        self.backend = backend
        self.workers = workers
        self.warm = Phase("warm", workers * WARM_TRIES, WARM_DELAY_S)
        self.phases = {p.name: p for p in [self.warm, *phases]}
        self._tmp = tempfile.TemporaryDirectory(prefix=f"crewbox-bench-{backend}-")
        self.folder = Path(self._tmp.name)
        script = self.folder / "script.yaml"
        script.write_text(yaml.safe_dump(script_steps(list(self.phases.values()))))
        self.env = {
            "CREWBOX_PROVIDER": "scripted",
            "CREWBOX_SCRIPT_PATH": str(script),
            "CREWBOX_PROMPTS_DIR": str(ROOT / "prompts"),
            "CREWBOX_WORKSPACES_DIR": str(ROOT / "workspaces"),
            "CREWBOX_TASKS_DIR": str(self.folder / "tasks"),
            "CREWBOX_RESULTS_DIR": str(self.folder / "results"),
            "CREWBOX_QUEUE": backend,
            # every worker may call at once (the default, 8, would hold 10 workers back)
            "CREWBOX_LLM_MAX_CONCURRENCY": str(max(8, workers)),
            "CREWBOX_LOG_LEVEL": "WARNING",
        }
        if backend == "rq":
            if redis_url is None:
                raise BenchError("the rq backend needs a Redis")
            self.env["CREWBOX_REDIS_URL"] = redis_url
            self.env["CREWBOX_WORK_DIR"] = str(self.folder / "work")
        self.settings = Settings.model_validate(
            {k.removeprefix("CREWBOX_").lower(): v for k, v in self.env.items()}
        )
        self.personas: dict[str, Persona] = load_personas(self.settings.prompts_dir)
        self.local = LocalWorkers([PERSONA], self.folder / "logs", self.env, workers)

    def __enter__(self) -> Pipeline:
        self.local.__enter__()
        try:
            self._warm_up()
        except BaseException:
            self.local.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.local.__exit__(exc_type, exc, tb)
        self._tmp.cleanup()

    def pids(self) -> list[int]:
        """The worker processes' pids."""
        return self.local.pids(PERSONA)

    def _warm_up(self) -> None:
        """Run warm-up tasks until every worker process has run one (all imported, all
        serving the queue), so no measured run waits for a process to start."""
        seen: set[str] = set()
        for _ in range(WARM_TRIES):
            seen |= self.run("warm", self.workers).workers_seen
            if len(seen) >= self.workers:
                return
        raise BenchError(f"{self.backend}: only {len(seen)} of {self.workers} workers came up")

    def run(self, phase_name: str, tasks: int) -> RunTiming:
        """Run ``tasks`` tasks of the phase through the Orchestrator and time it.

        Raises:
            BenchError: the run did not succeed.
        """
        phase = self.phases[phase_name]
        ended: list[float] = []

        def on_event(event: Event) -> None:
            if event.kind in TASK_END_KINDS:
                ended.append(time.perf_counter())

        orch = orchestrator(self.settings, self.personas, on_event)
        request = Request(text=f"bench {phase.name}", plan=plan_of(phase, tasks))
        start = time.perf_counter()
        summary = orch.run(request)
        if summary.status != "succeeded" or len(ended) != tasks:
            errors = {r.error for r in summary.tasks if r.error}
            raise BenchError(f"{self.backend} run {summary.run_id}: {summary.status} {errors}")
        seen = {r.worker for r in summary.tasks}
        return RunTiming(max(ended) - start, summary, seen)

    def dispatch_ms(self, samples: int, gap_s: float = 0.02) -> list[float]:
        """Enqueue to the worker starting the task, in ms, for ``samples`` tasks sent one at
        a time to idle workers (``gap_s`` after the previous result): ``TaskQueue.enqueue``
        called to the ``task_started`` event the worker emits (its ``ts_s``) as it starts
        the task. The tasks belong to a run whose lease this process holds, so the worker
        runs them (crewbox.queue and crewbox.runlog, as the orchestrator uses them).

        Raises:
            BenchError: a task did not start or end within 10 s.
        """
        phase = self.phases["dispatch"]
        request = Request(text="bench dispatch", plan=plan_of(phase, samples))
        run_log = cluster_run_log(self.settings)
        run_log.create(request)
        owner = f"{process_id()}:bench"
        run_log.acquire(request.run_id, owner)
        queue = make_queue(self.settings)
        latencies: list[float] = []
        with LeaseKeeper(run_log, request.run_id, owner):
            for spec in request.plan.tasks if request.plan else []:
                time.sleep(gap_s)
                task = Task(run_id=request.run_id, spec=spec, request_text=request.text)
                sent = time.time()
                queue.enqueue(task)
                started = self._await_task(queue, request.run_id, spec.id)
                latencies.append((started - sent) * 1000)
        queue.close_run(request.run_id, [PERSONA])
        return latencies

    @staticmethod
    def _await_task(queue: Any, run_id: str, task_id: str) -> float:
        """The ``ts_s`` of the task's ``task_started`` event, once its result is in too."""
        deadline = time.monotonic() + 10
        started: float | None = None
        while time.monotonic() < deadline:
            for message in queue.receive(run_id, 1.0):
                if isinstance(message, Result) and message.task_id == task_id:
                    if started is None:
                        raise BenchError(f"task {task_id} ended without a task_started event")
                    return started
                if isinstance(message, WorkerEvent) and message.event.kind == "task_started":
                    started = message.event.ts_s
        raise BenchError(f"task {task_id} did not run within 10 s (pid {os.getpid()})")
