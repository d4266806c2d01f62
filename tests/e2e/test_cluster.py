"""The cluster end to end, as a newcomer runs it: `make up`, `make submit`, `make logs-marie`,
`make down`, with no Anthropic key, so the local model (llama.cpp server) answers.

The project is copied to a temporary folder and run under its own compose project name, so
the test never touches the developer's own cluster, secrets or results.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from crewbox.models import RunSummary
from tests.e2e.cluster import (
    WORKER_PROCESS,
    Cluster,
    assert_worker_boxed,
    compose_answers,
    copy_project,
    project_name,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PROJECT = project_name("crewbox-e2e")
REQUEST = (
    "Plan a spring recital: choreography for the kids class (marie), a ticket page (anga), "
    "and an Instagram campaign (fabien)"
)
ATTEMPTS = 3
"""The local 135M model plans weakly: a run is retried while its plan names one persona."""


def make(project: Path, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    """Run `make ARGS` in the copied project, without any Anthropic key in the environment."""
    return Cluster(project, PROJECT).make(*args, timeout_s=timeout_s)


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose ARGS` for the test's project."""
    return Cluster(project, PROJECT).compose(*args)


def in_marie(project: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run a shell command inside marie's running container."""
    return compose(project, "exec", "-T", "marie", "sh", "-c", command)


def project_containers() -> list[str]:
    return Cluster(Path("."), PROJECT).containers()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the project with the cluster up; `make down` afterwards."""
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    copy = copy_project(tmp_path_factory.mktemp("cluster"))
    add_fourth_persona(copy)
    up = make(copy, "up")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    yield copy
    make(copy, "clean")


FOURTH = """---
name: odile
description: Odile, the studio's lighting designer. Pick her for stage lighting cues.
tools: Read, Write, Glob
model: inherit
workspace: lighting
---
You are Odile, a lighting designer. Write short, practical cue sheets.
"""


def add_fourth_persona(project: Path) -> None:
    """What README's "Add a persona" asks of a user: one file in prompts/, its material in
    workspaces/<folder>/ (then `make up`); and a one-task workflow for her."""
    (project / "prompts" / "odile.md").write_text(FOURTH)
    (project / "workspaces" / "lighting").mkdir()
    (project / "workspaces" / "lighting" / "rig.md").write_text("12 PAR cans, 2 follow spots.\n")
    plan = {
        "description": "A cue sheet for the recital",
        "request": "Light the kids' recital piece",
        "tasks": [{"id": "cues", "persona": "odile", "title": "Cue sheet",
                   "instructions": "Write cues.md: three lighting cues.", "depends_on": []}],
    }  # fmt: skip
    (project / "workflows" / "odile-cues.yaml").write_text(json.dumps(plan))


@pytest.fixture(scope="module")
def run(project: Path) -> dict[str, Any]:
    """`make submit` of the recital request; what it printed and left in results/.

    The small local model sometimes plans every task for one persona; such a run is
    submitted again (up to ATTEMPTS), and each discarded plan is printed.
    """
    found: dict[str, Any] = {}
    for _ in range(ATTEMPTS):
        found = submit(project)
        tasks = found["summary"].tasks
        if len({r.persona for r in tasks}) >= 2:
            return found
        print("discarded a one-persona plan:", [(r.task_id, r.persona) for r in tasks])
    return found


def submit(project: Path) -> dict[str, Any]:
    """`make submit REQUEST=...`: its output, run folder and summary."""
    proc = make(project, "submit", f"REQUEST={REQUEST}", timeout_s=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"submitted run (\S+)", proc.stderr)
    assert match, proc.stderr
    run_dir = project / "results" / match.group(1)
    summary = RunSummary.model_validate_json((run_dir / "summary.json").read_text())
    return {"proc": proc, "run_dir": run_dir, "summary": summary}


def test_the_plan_spans_personas_that_ran_in_separate_containers_at_the_same_time(
    run: dict[str, Any],
) -> None:
    summary: RunSummary = run["summary"]
    done = [r for r in summary.tasks if r.status == "succeeded"]
    assert len({r.persona for r in done}) >= 2, [(r.task_id, r.persona) for r in summary.tasks]
    pairs = [(a, b) for a, b in combinations(done, 2) if a.persona != b.persona]
    assert any(a.worker.split(":")[0] != b.worker.split(":")[0] for a, b in pairs)
    overlapping = [
        (a.task_id, b.task_id)
        for a, b in pairs
        if max(a.started_at_s, b.started_at_s) < min(a.ended_at_s, b.ended_at_s)
    ]
    assert overlapping, [(r.task_id, r.started_at_s, r.ended_at_s) for r in done]


def test_artifacts_final_answer_and_usage_from_the_model_server(run: dict[str, Any]) -> None:
    summary: RunSummary = run["summary"]
    run_dir: Path = run["run_dir"]
    for result in summary.tasks:
        for artifact in result.artifacts:
            data = (run_dir / result.persona / result.task_id / artifact.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact.sha256
    assert sum(len(r.artifacts) for r in summary.tasks) >= 2
    final = (run_dir / "final.md").read_text()
    assert final.strip()
    assert final.strip() in run["proc"].stdout
    total = summary.usage_total
    assert total.output_tokens > 0 and total.input_tokens + total.cache_read_tokens > 0
    assert total.calls == sum(r.usage.calls for r in summary.tasks) + sum(
        summary.usage_by_stage[s].calls for s in ("planner", "synthesizer")
    )
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    per_call = [e["data"]["usage"]["output_tokens"] for e in events if e["kind"] == "llm_call"]
    assert sum(per_call) == total.output_tokens and all(n > 0 for n in per_call)


def test_make_logs_marie_shows_the_run(project: Path, run: dict[str, Any]) -> None:
    logs = make(project, "logs-marie")
    assert logs.returncode == 0, logs.stderr
    run_id = run["run_dir"].name
    assert any("marie" in line and run_id in line for line in logs.stdout.splitlines()), logs.stdout


def test_crewbox_logs_reads_the_persona_containers_through_the_docker_sdk(
    project: Path, run: dict[str, Any]
) -> None:
    env = {**os.environ, "COMPOSE_PROJECT_NAME": PROJECT}
    proc = subprocess.run(
        [sys.executable, "-m", "crewbox", "logs", "marie", "--tail", "200"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith(f"{PROJECT}-marie-") for line in lines)
    assert any(run["run_dir"].name in line for line in lines)


def test_scaled_workers_share_a_persona_queue(project: Path) -> None:
    scale = make(project, "scale", "PERSONA=anga", "N=2")
    assert scale.returncode == 0, scale.stderr
    anga: list[str] = []
    deadline = time.monotonic() + 60
    while len(anga) < 2 and time.monotonic() < deadline:  # until the new worker registers
        workers = make(project, "workers")
        anga = [line for line in workers.stdout.splitlines() if line.strip("│ ").startswith("anga")]
    assert len(anga) == 2, anga
    assert all(" yes " in line for line in anga)


def test_marie_cannot_read_anga_secret_or_workspace(project: Path) -> None:
    secrets = in_marie(project, "ls /run/secrets")
    assert sorted(secrets.stdout.split()) == ["marie_key", "redis_password"]
    assert in_marie(project, "cat /run/secrets/anga_key").returncode != 0
    workspace = in_marie(project, "ls /workspace")
    assert "students.csv" in workspace.stdout and "tickets" not in workspace.stdout
    assert in_marie(project, "ls /app/workspaces /workspace/../code 2>&1").returncode != 0


def test_root_filesystem_is_read_only_and_the_worker_is_not_root(project: Path) -> None:
    write = in_marie(project, "touch /app/x")
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert in_marie(project, "touch /tmp/scratch").returncode == 0
    worker = compose(project, "exec", "-T", "marie", "python", "-c", WORKER_PROCESS)
    assert_worker_boxed(worker.stdout + worker.stderr)


def test_redis_refuses_a_client_without_its_user_and_password(project: Path) -> None:
    probe = (
        "import redis; c = redis.Redis(host='redis')\n"
        "try:\n    c.ping(); print('ANSWERED')\n"
        "except redis.exceptions.AuthenticationError as e:\n    print('REFUSED', e)\n"
        "print(redis.Redis(host='redis', username='marie', "
        "password=open('/run/secrets/redis_password').read().strip()).ping())"
    )
    out = compose(project, "exec", "-T", "marie", "python", "-c", probe)
    assert out.stdout.split()[0] == "REFUSED", out.stdout + out.stderr
    assert out.stdout.strip().endswith("True")
    assert compose(project, "port", "redis", "6379").stdout.strip() in ("", ":0")


def test_a_persona_added_by_one_file_runs_in_its_own_hardened_container(project: Path) -> None:
    proc = make(project, "workflow-odile-cues", timeout_s=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    match = re.search(r"submitted run (\S+)", proc.stderr)
    assert match, proc.stderr
    summary = RunSummary.model_validate_json(
        (project / "results" / match.group(1) / "summary.json").read_text()
    )
    (task,) = summary.tasks
    assert (task.persona, task.status) == ("odile", "succeeded"), task.error
    (container,) = compose(project, "ps", "-q", "odile").stdout.split()
    assert task.worker.split(":")[0] in (container[:12], f"{PROJECT}-odile-1"), task.worker
    (info,) = json.loads(Cluster(project, PROJECT).docker("inspect", container))
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    caps = sorted(cap.removeprefix("CAP_") for cap in host["CapAdd"])
    assert caps == ["DAC_READ_SEARCH", "SETGID", "SETUID"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    workspace = [m for m in info["Mounts"] if m["Destination"] == "/workspace"]
    assert [m["Source"].endswith("/workspaces/lighting") and not m["RW"] for m in workspace] == [
        True
    ]
    networks = set(info["NetworkSettings"]["Networks"])
    assert networks == {f"{PROJECT}_net-odile"}, networks
    secrets = compose(project, "exec", "-T", "odile", "ls", "/run/secrets")
    assert sorted(secrets.stdout.split()) == ["odile_key", "redis_password"]
    worker = compose(project, "exec", "-T", "odile", "python", "-c", WORKER_PROCESS)
    assert_worker_boxed(worker.stdout + worker.stderr)


def test_make_web_serves_the_run_view_on_loopback_with_its_read_only_user(
    project: Path, run: dict[str, Any]
) -> None:
    """`make web`: the web service reads the run from Redis as its user `web` and answers
    on 127.0.0.1 only. Adds about 10 s to this module (the image is built by `make up`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cluster = Cluster(project, PROJECT, env={"CREWBOX_WEB_PORT": str(port)})
    up = cluster.make("web", timeout_s=300)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert cluster.compose("port", "web", "8080").stdout.strip() == f"127.0.0.1:{port}"
    run_id = run["run_dir"].name
    try:
        page = get_when_up(f"http://127.0.0.1:{port}/runs/{run_id}")
    except AssertionError:
        print(cluster.compose("logs", "web").stdout[-3000:])
        raise
    status = run["summary"].status
    assert f'id="run-status" class="status s-{status}">{status}' in page
    assert page.count('class="bar s-') == sum(len(a) for a in run["summary"].attempts.values())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/htmx.min.js") as answer:
        assert answer.status == 200


def get_when_up(url: str, timeout_s: float = 60) -> str:
    """The page at ``url`` once the server answers 200 (it starts after its container does).

    Raises:
        AssertionError: no 200 within ``timeout_s``, with the last answer or error.
    """
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        except urllib.error.HTTPError as exc:
            last = f"{exc.code}: {exc.read().decode(errors='replace')[-2000:]}"
        except (urllib.error.URLError, ConnectionError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} gave no page within {timeout_s:.0f} s; last: {last}")


def test_make_down_leaves_no_container(project: Path, run: dict[str, Any]) -> None:
    assert project_containers()
    down = make(project, "down")
    assert down.returncode == 0, down.stderr
    assert project_containers() == []
