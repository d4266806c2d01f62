"""Embedded mode with many personas: ``crewbox run TEXT`` as a user runs it, 200 generated
persona files present (tests/personas_fixture.py), the scripted planner naming 10 of them
(one task each, answering after TASK_S so their workers are seen alive).

Figures: worker processes started (children of the CLI seen at any time), the most alive
at once, their RSS (MiB, the largest sample of each, summed and the largest one), seconds
from the CLI's start to the first ``task_dispatched`` and to the first ``task_started``,
superseded and lost attempts, and the run's status. ``python -m bench.many_personas``
prints them alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import rss_mb
from tests.conftest import ROOT, scripted_env, spec
from tests.personas_fixture import write_personas

PRESENT = 200
PLANNED = 10
TASK_S = 2.0
"""How long each task's (scripted) LLM call takes."""

SAMPLE_S = 0.1
"""How often the CLI's children are looked at."""

RUN_TIMEOUT_S = 300.0


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (/proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def setup(folder: Path) -> tuple[dict[str, str], str]:
    """The prompts, the script and the environment of the run; returns (env, request)."""
    prompts = folder / "prompts"
    names = write_personas(prompts, PRESENT)
    for role in ("orchestrator.md", "synthesizer.md"):
        shutil.copy(ROOT / "prompts" / role, prompts / role)
    planned = names[:: PRESENT // PLANNED][:PLANNED]
    tasks = [spec(f"t{i}", name) for i, name in enumerate(planned)]
    plan = {"name": "submit_plan", "input": {"tasks": tasks}}
    steps: list[dict[str, Any]] = [{"match": "Call submit_plan", "tool_uses": [plan]}]
    steps += [
        {"match": f"Task id: t{i}", "text": f"done t{i}", "delay_s": TASK_S} for i in range(PLANNED)
    ]
    steps.append({"match": "## Results", "text": "answer"})
    env = scripted_env(folder, steps, CREWBOX_PROMPTS_DIR=str(prompts), CREWBOX_LOG_LEVEL="WARNING")
    return env, "Work for " + ", ".join(planned)


def watch_run(proc: subprocess.Popen[bytes]) -> tuple[set[int], int, dict[int, float]]:
    """Sample the CLI's children until it exits: (every child pid, most alive at once,
    largest RSS of each in MiB)."""
    seen: set[int] = set()
    most = 0
    rss: dict[int, float] = {}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        alive = children(proc.pid)
        seen.update(alive)
        most = max(most, len(alive))
        for pid in alive:
            mb = rss_mb(pid)
            if mb is not None:
                rss[pid] = max(rss.get(pid, 0.0), mb)
        time.sleep(SAMPLE_S)
    return seen, most, rss


def measure() -> dict[str, Any]:
    """Run once and return the figures (see the module docstring).

    Raises:
        RuntimeError: the run did not finish or failed (its stderr's end in the message).
    """
    with tempfile.TemporaryDirectory(prefix="crewbox-bench-personas-") as tmp:
        folder = Path(tmp)
        env, request = setup(folder)
        started = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "crewbox", "run", request],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        seen, most, rss = watch_run(proc)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"crewbox run exited {proc.returncode}: {stderr[-400:]!r}")
        (run_dir,) = (folder / "results").iterdir()
        events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "summary.json").read_text())
    first = {
        kind: min((e["ts_s"] for e in events if e["kind"] == kind), default=None)
        for kind in ("task_dispatched", "task_started")
    }
    kinds = [e["kind"] for e in events]
    return {
        "personas_present": PRESENT,
        "personas_planned": PLANNED,
        "many_workers_started": len(seen),
        "many_workers_at_once": most,
        "many_workers_rss_mb_total": round(sum(rss.values()), 1),
        "many_workers_rss_mb_max": round(max(rss.values(), default=0.0), 1),
        "many_first_dispatch_s": _since(first["task_dispatched"], started),
        "many_first_started_s": _since(first["task_started"], started),
        "many_superseded": kinds.count("attempt_superseded"),
        "many_lost": kinds.count("attempt_lost"),
        "many_status": summary["status"],
    }


def _since(ts_s: float | None, started_s: float) -> float | None:
    return None if ts_s is None else round(ts_s - started_s, 2)


def main() -> None:
    """Measure once and print the figures, one ``name: value`` a line."""
    for key, value in measure().items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
