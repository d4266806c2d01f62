"""``crewbox run --plan`` as a user starts it: from process start to the first LLM call.

A one-task plan, ScriptedLLM answering at once and recording every call with its start
time (CREWBOX_SCRIPT_RECORD_DIR); the first call is the worker's, so the figure covers the
CLI's imports, the worker process's start and imports, and the dispatch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.pipeline import PERSONA, ROOT, SYNTH_MATCH
from crewbox.testing import recorded_calls


def startup_env(folder: Path) -> dict[str, str]:
    """The environment of one ``crewbox run``: scripted, recording, its own folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREWBOX_", "ANTHROPIC_"))}
    steps = [{"match": SYNTH_MATCH, "text": "answer"}, {"text": "done"}]
    (folder / "script.yaml").write_text(yaml.safe_dump(steps))
    env.update(
        CREWBOX_PROVIDER="scripted",
        CREWBOX_SCRIPT_PATH=str(folder / "script.yaml"),
        CREWBOX_SCRIPT_RECORD_DIR=str(folder / "record"),
        CREWBOX_PROMPTS_DIR=str(ROOT / "prompts"),
        CREWBOX_WORKSPACES_DIR=str(ROOT / "workspaces"),
        CREWBOX_TASKS_DIR=str(folder / "tasks"),
        CREWBOX_RESULTS_DIR=str(folder / "results"),
    )
    return env


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
        done = subprocess.run(
            [sys.executable, "-m", "crewbox", "run", "--plan", str(folder / "plan.yaml")],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"crewbox run failed: {done.stderr[-400:]}")
        calls = recorded_calls(folder / "record")
        return min(c.started_at_s for c in calls) - started


def run_startup_s(repeats: int = 3) -> float:
    """The median of ``repeats`` :func:`one_startup_s`."""
    return statistics.median(one_startup_s() for _ in range(repeats))
