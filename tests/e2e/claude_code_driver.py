"""Run inside the claude-code worker image by test_claude_code_container: start as a cluster
worker does (read the secret file as root, forget the secret variables, drop to
CREWBOX_RUN_AS and become non-dumpable), then run one task of persona ``tess`` with the
claude-code engine. The last stdout line is ``{"pid": ..., "result": {...}}``."""

from __future__ import annotations

import json
import os

from crewbox.config import Settings
from crewbox.llm.factory import make_client
from crewbox.models import Task, TaskSpec
from crewbox.personas import load_personas
from crewbox.privileges import drop_privileges, forget_secret_environment
from worker.service import TaskRunner


def main() -> None:
    """One task, as a cluster worker runs it (see the module docstring)."""
    cfg = Settings().with_secrets_loaded()
    forget_secret_environment()
    drop_privileges(cfg.run_as)
    persona = load_personas(cfg.prompts_dir)["tess"]
    spec = TaskSpec(id="t1", persona="tess", title="T", instructions="Go.", timeout_s=60)
    task = Task(run_id="r1", spec=spec, request_text="A test")
    runner = TaskRunner(cfg, persona, make_client(cfg, persona="tess"), "container:1")
    result = runner(task, lambda event: None)
    assert result is not None
    print(
        json.dumps(
            {"pid": os.getpid(), "uid": os.getuid(), "result": result.model_dump(mode="json")}
        )
    )


if __name__ == "__main__":
    main()
