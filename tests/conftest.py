"""Shared fixtures: the repository's folders and an environment for running `crewbox`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crewbox.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def scripted_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of an in-process run on the scripted provider: the project's prompts and
    workspaces, tasks/ and results/ under ``tmp_path``, no task retries unless overridden."""
    fields: dict[str, Any] = {
        "provider": "scripted",
        "prompts_dir": ROOT / "prompts",
        "workspaces_dir": ROOT / "workspaces",
        "tasks_dir": tmp_path / "tasks",
        "results_dir": tmp_path / "results",
        "task_retries": 0,
    }
    return Settings(**{**fields, **overrides})


def crewbox_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Environment for a `crewbox` subprocess: repo prompts/workspaces, tmp tasks/results."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREWBOX_", "ANTHROPIC_"))}
    env.update(
        CREWBOX_PROMPTS_DIR=str(ROOT / "prompts"),
        CREWBOX_WORKSPACES_DIR=str(ROOT / "workspaces"),
        CREWBOX_TASKS_DIR=str(tmp_path / "tasks"),
        CREWBOX_RESULTS_DIR=str(tmp_path / "results"),
        CREWBOX_LOG_LEVEL="INFO",
    )
    env.update(overrides)
    return env


def scripted_env(tmp_path: Path, steps: list[dict[str, Any]], **overrides: str) -> dict[str, str]:
    """crewbox_env with ScriptedLLM answering: ``steps`` in ``tmp_path/script.yaml``, every
    call recorded under ``tmp_path/record``."""
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(steps))
    return crewbox_env(
        tmp_path,
        CREWBOX_PROVIDER="scripted",
        CREWBOX_SCRIPT_PATH=str(tmp_path / "script.yaml"),
        CREWBOX_SCRIPT_RECORD_DIR=str(tmp_path / "record"),
        **overrides,
    )


def run_crewbox(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m crewbox ARGS` as a user would, capturing stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "crewbox", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def spec(
    task_id: str, persona: str, depends_on: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    """A task spec as plan data: ``instructions`` is ``Do <id>.``; ``kw`` adds fields."""
    return {
        "id": task_id,
        "persona": persona,
        "title": task_id,
        "instructions": f"Do {task_id}.",
        "depends_on": depends_on or [],
        **kw,
    }


@pytest.fixture
def root() -> Path:
    """The repository root."""
    return ROOT
