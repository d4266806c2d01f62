"""``crewbox run --plan`` as a user starts it: from process start to the first LLM call.

A one-task plan, ScriptedLLM answering at once and recording every call with its start
time (CREWBOX_SCRIPT_RECORD_DIR); the first call is the worker's, so the figure covers the
CLI's imports, the worker process's start and imports, and the dispatch.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import yaml

from bench.pipeline import PERSONA, SYNTH_MATCH
from crewbox.testing import recorded_calls
from tests.conftest import run_crewbox, scripted_env


def startup_env(folder: Path) -> dict[str, str]:
    """The environment of one ``crewbox run``: scripted, recording, its own folders."""
    return scripted_env(folder, [{"match": SYNTH_MATCH, "text": "answer"}, {"text": "done"}])


def one_startup_s() -> float:
    """Seconds from starting ``python -m crewbox run --plan`` to its first LLM call.

    Raises:
        RuntimeError: the run failed (its stderr's end in the message).
    """
    with tempfile.TemporaryDirectory(prefix="crewbox-bench-startup-") as tmp:
        folder = Path(tmp)
        env = startup_env(folder)
        plan = {"request": "bench", "tasks": [
            {"id": "t0", "persona": PERSONA, "title": "t0", "instructions": "Do t0."}]}  # fmt: skip
        (folder / "plan.yaml").write_text(yaml.safe_dump(plan))
        started = time.time()
        done = run_crewbox(["run", "--plan", str(folder / "plan.yaml")], env, folder)
        if done.returncode != 0:
            raise RuntimeError(f"crewbox run failed: {done.stderr[-400:]}")
        calls = recorded_calls(folder / "record")
        return min(c.started_at_s for c in calls) - started


def run_startup_s(repeats: int = 3) -> float:
    """The median of ``repeats`` :func:`one_startup_s`."""
    return statistics.median(one_startup_s() for _ in range(repeats))
