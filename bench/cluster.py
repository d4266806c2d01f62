"""The cluster as a user starts it, with a Docker engine: ``make up`` and one submit.

In a copy of the committed project (``git archive HEAD``) under its own compose project
name (COMPOSE_PROJECT_NAME=crewbox-bench), without Anthropic keys, so the local model
answers. A first ``make up`` and ``make down`` build its images (not timed):
``cluster_up_s`` is ``make up`` (secrets, a cached build, ``up --wait`` until every service
is healthy), ``submit_s`` is
``make workflow-bench-one`` (a one-task plan, from the client container's start to the
printed answer). ``make down`` (and its Redis volume dropped) afterwards, always.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.pipeline import PERSONA, ROOT

PROJECT = "crewbox-bench"
MODEL = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
ONE_TASK_PLAN = {
    "request": "Name one warm-up exercise for a beginners' ballet class.",
    "tasks": [
        {
            "id": "warmup",
            "persona": PERSONA,
            "title": "One warm-up exercise",
            "instructions": "Name one warm-up exercise for a beginners' ballet class, in one "
            "sentence.",
        }
    ],
}


class ClusterError(Exception):
    """A step of the cluster figures failed; the message says which and why."""


def engine_answers() -> str | None:
    """None when a Docker engine and Compose v2 answer, else why not."""
    if not shutil.which("docker"):
        return "no docker command"
    for args in (["docker", "info"], ["docker", "compose", "version"]):
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            return f"`{' '.join(args)}` failed: {done.stderr.strip().splitlines()[-1:]}"
    return None


def step(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 900
) -> float:
    """Run ``args`` in ``cwd``; the seconds it took.

    Raises:
        ClusterError: it failed or timed out (the end of its output in the message).
    """
    start = time.perf_counter()
    try:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`{' '.join(args)}` took over {timeout_s:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-300:]
        raise ClusterError(f"`{' '.join(args)}` failed: {tail}")
    return time.perf_counter() - start


def copy_project(target: Path) -> None:
    """The committed project (``git archive HEAD``) into ``target``, with the local model
    (fetched into this project's models/ by ``make model`` first) linked in.

    Raises:
        ClusterError: not a git checkout, or the model could not be fetched.
    """
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise ClusterError(
            f"git archive HEAD failed (not a git checkout?): {archive.stderr[-200:]!r}"
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    step(["make", "--no-print-directory", "model"], ROOT)
    (target / MODEL).unlink(missing_ok=True)
    try:
        os.link(ROOT / MODEL, target / MODEL)
    except OSError:
        shutil.copy2(ROOT / MODEL, target / MODEL)
    (target / "workflows" / "bench-one.yaml").write_text(yaml.safe_dump(ONE_TASK_PLAN))


def cluster_env() -> dict[str, str]:
    """The user's environment without Anthropic keys or crewbox settings (the local model
    answers), under the bench's compose project."""
    env = {
        k: v
        for k, v in os.environ.items()
        if "ANTHROPIC" not in k and not k.startswith(("CREWBOX_", "MAKEFLAGS", "COMPOSE_"))
    }
    for image in ("CREWBOX_PYTHON_IMAGE", "CREWBOX_REDIS_IMAGE", "CREWBOX_LLM_IMAGE"):
        if image in os.environ:  # local base images on machines without a registry
            env[image] = os.environ[image]
    env["COMPOSE_PROJECT_NAME"] = PROJECT
    return env


def measure() -> dict[str, Any]:
    """``{cluster_up_s, submit_s}``, or both None and ``cluster_reason`` saying why."""
    reason = engine_answers()
    if reason:
        return {"cluster_up_s": None, "submit_s": None, "cluster_reason": reason}
    figures: dict[str, Any] = {"cluster_up_s": None, "submit_s": None}
    env = cluster_env()
    with tempfile.TemporaryDirectory(prefix="crewbox-bench-cluster-") as tmp:
        copy = Path(tmp)
        try:
            copy_project(copy)
            step(["make", "--no-print-directory", "up"], copy, env)  # builds the images
            step(["make", "--no-print-directory", "down"], copy, env)
            figures["cluster_up_s"] = step(["make", "--no-print-directory", "up"], copy, env)
            figures["submit_s"] = step(
                ["make", "--no-print-directory", "workflow-bench-one"], copy, env
            )
        except (ClusterError, subprocess.CalledProcessError) as exc:
            figures["cluster_reason"] = str(exc)
        finally:
            subprocess.run(["make", "--no-print-directory", "down"], cwd=copy, env=env,
                           capture_output=True, check=False, timeout=300)  # fmt: skip
            subprocess.run(
                ["docker", "compose", "--profile", "llm", "--profile", "client", "down",
                 "--volumes", "--remove-orphans"],
                cwd=copy, env=env, capture_output=True, check=False, timeout=300,
            )  # fmt: skip
            # results/ of the copy belong to the containers' user: make them removable
            subprocess.run(["chmod", "-R", "u+rwX", str(copy)], check=False)
    return figures
