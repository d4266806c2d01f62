"""A persona with ``engine: claude-code`` in the compose cluster, as `make up` starts it, its
calls going out the way a real deployment's do: the real Claude Code CLI calls the worker's
loopback gateway, the worker calls ``ANTHROPIC_BASE_URL`` with the persona's own key through
the egress proxy (a CONNECT tunnel, TLS inside), and only there is the LLM faked.

The fake (tests/fakes/messages_service.py: ScriptedLLM behind the Messages API, over HTTPS
with a certificate of a CA this test makes) is its own compose service, on the egress
proxy's ``outside`` network only: no worker or orchestrator network reaches it, so a call
that arrives went through the proxy. The workers and the orchestrator trust the test CA
through ``SSL_CERT_FILE``; ``ANTHROPIC_BASE_URL`` is set for `make up` as a user would, so
the egress proxy allows its host and every service calls it. The orchestrator's synthesis
goes the same way, with its own key. The fake records every call with its usage (the
ledger summary.json must equal to the token) and the key each request carried.

The cluster is a copy of the project (the persona, its key and the fake's code added to
the copy) under its own compose project (``CREWBOX_TEST_PROJECT_SUFFIX`` honoured), started
with `make up PERSONAS=cody`. Measured on 2 cores shared with other test clusters, images
in Docker's layer cache: 38 s for the module (`make up` 14 s, the container checks 11 s, the
run 3 s, the endpoint-down case 13 s (33 s with each call retried twice); with
``CREWBOX_LLM_MAX_RETRIES=0`` three attempts of one try each, then the synthesis's
fallback; `down -v` 5-12 s). With the images to rebuild, add a minute or two.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from crewbox.models import RunSummary, Usage
from crewbox.testing import recorded_calls
from tests.conftest import ROOT
from tests.e2e.chaos import ChaosCluster, task
from tests.e2e.cluster import (
    WORKER_PROCESS,
    assert_hardened,
    assert_worker_boxed,
    compose_answers,
    copy_project,
    project_name,
)
from tests.fakes.messages_service import PORT, auth_records, write_test_ca

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

PROJECT = project_name("crewbox-engine-cluster")
PERSONA = "cody"
PROMPT = "Write what you are asked to."
MARKER = "CCE2E-5150"
"""In the task's instructions: the scripted steps of its calls match it."""
REQUEST = "claude-code in the cluster"
CONTENT = "hello from Claude Code\n"

FAKE = "anthropic-fake"
"""The fake endpoint's compose service (its host name on the ``outside`` network)."""
BASE_URL = f"https://{FAKE}:{PORT}"
PERSONA_KEY = "sk-ant-cody-e2e-0123456789abcdef"
ORCHESTRATOR_KEY = "sk-ant-orchestrator-e2e-fedcba9876543210"
CA_PATH = "/etc/crewbox-test/ca.pem"
"""Where the orchestrator's and the worker's containers find the test CA (mounted
read-only, named by ``SSL_CERT_FILE``)."""

SERVE = [
    "python",
    "-m",
    "tests.fakes.messages_service",
    "--script",
    "/chaos/script.yaml",
    "--record",
    "/chaos/record",
    "--cert",
    "/chaos/tls/server.pem",
]
"""The fake endpoint's command in its container (the script and records in ./chaos)."""
HEALTH = f"import socket; socket.create_connection(('127.0.0.1', {PORT}), 2)"

STEPS = [
    {
        "match": MARKER,
        "text": "Writing hello.md.",
        "tool_uses": [{"name": "Write", "input": {"file_path": "hello.md", "content": CONTENT}}],
        "usage": {"input_tokens": 1200, "output_tokens": 80, "cache_read_tokens": 300},
    },
    {
        "match": MARKER,
        "text": "Wrote hello.md.",
        "usage": {"input_tokens": 1500, "output_tokens": 30},
    },
    {"match": f"## Request\\n\\n{REQUEST}", "text": "cody wrote hello.md."},
]
"""Claude Code's two calls (Write, then its final text) and the orchestrator's synthesis."""


def endpoint_override() -> dict[str, Any]:
    """The test's compose override: the fake endpoint on ``outside`` only (the egress
    proxy's network), started before the proxy; the test CA trusted by the orchestrator
    and the persona's worker."""
    trust = {
        "environment": {"SSL_CERT_FILE": CA_PATH},
        "volumes": [f"./chaos/tls/ca.pem:{CA_PATH}:ro"],
    }
    fake = {
        "image": "${COMPOSE_PROJECT_NAME:-crewbox}:local",
        "command": [*SERVE, "--port", str(PORT)],
        "volumes": ["./chaos:/chaos", "./tests:/app/tests:ro"],
        "networks": ["outside"],
        "read_only": True,
        "healthcheck": {"test": ["CMD", "python", "-c", HEALTH], "interval": "1s", "retries": 60},
    }
    return {
        "services": {
            FAKE: fake,
            "egress": {"depends_on": {FAKE: {"condition": "service_healthy"}}},
            "orchestrator": trust,
            PERSONA: json.loads(json.dumps(trust)),
        }
    }


def write_plans(cluster: ChaosCluster) -> None:
    """workflows/claude-code.yaml (the run) and endpoint-down.yaml (the failure case)."""
    for name, request in (("claude-code", REQUEST), ("endpoint-down", "endpoint down")):
        spec = {**task("c1", PERSONA), "instructions": f"{MARKER}: write hello.md."}
        plan = {"request": request, "tasks": [spec]}
        (cluster.folder / "workflows" / f"{name}.yaml").write_text(yaml.safe_dump(plan))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    """The copied project, up with cody only (the core services and the fake endpoint);
    down -v afterwards."""
    if not compose_answers():
        pytest.skip("needs Docker with Compose v2 (.ci/run starts one)")
    folder = copy_project(tmp_path_factory.mktemp("engine-cluster"))
    (folder / "tests").mkdir()
    shutil.copy2(ROOT / "tests" / "__init__.py", folder / "tests")
    shutil.copytree(ROOT / "tests" / "fakes", folder / "tests" / "fakes")
    (folder / "prompts" / f"{PERSONA}.md").write_text(
        f"---\nname: {PERSONA}\ndescription: Writes files with Claude Code\n"
        f"tools: Read, Write\nengine: claude-code\n---\n{PROMPT}\n"
    )
    (folder / "secrets" / f"{PERSONA}.key").write_text(PERSONA_KEY + "\n")
    (folder / "secrets" / "orchestrator.key").write_text(ORCHESTRATOR_KEY + "\n")
    cluster = ChaosCluster(folder, PROJECT)
    cluster.extra_env["ANTHROPIC_BASE_URL"] = BASE_URL
    # one try a call: the endpoint answers every call, and the endpoint-down case then ends
    # after its three attempts without waiting out two retries of each call
    cluster.extra_env["CREWBOX_LLM_MAX_RETRIES"] = "0"
    (folder / "chaos.yml").write_text(yaml.safe_dump(endpoint_override()))
    for sub in ("record/steps", "record/calls", "record/auth"):
        (cluster.chaos / sub).mkdir(parents=True, exist_ok=True)
    write_test_ca(cluster.chaos / "tls", FAKE)
    for path in [cluster.chaos, *cluster.chaos.rglob("*")]:
        if path.is_dir():
            path.chmod(0o777)
    (cluster.chaos / "script.yaml").write_text(yaml.safe_dump(STEPS))
    write_plans(cluster)
    try:
        done = cluster.make("up", f"PERSONAS={PERSONA}", timeout_s=1500)
        if done.returncode != 0:
            logs = cluster.compose("logs", "--no-color", "--tail=40", PERSONA, FAKE, "egress")
            pytest.fail(f"make up: {done.stderr[-2000:]}\n{logs.stdout[-4000:]}")
        yield cluster
    finally:
        cluster.compose("--profile", "llm", "--profile", "client", "down", "-v", "--remove-orphans")


def inspect(cluster: ChaosCluster, service: str) -> dict[str, Any]:
    """``docker inspect`` of the service's one container."""
    (container,) = cluster.compose("ps", "-q", service).stdout.split()
    info: dict[str, Any] = json.loads(cluster.docker("inspect", container))[0]
    return info


def networks(info: dict[str, Any]) -> dict[str, Any]:
    """The container's networks by name (``<project>_<network>``)."""
    found: dict[str, Any] = info["NetworkSettings"]["Networks"]
    return found


def test_the_worker_is_hardened_and_reaches_the_endpoint_only_through_egress(
    cluster: ChaosCluster,
) -> None:
    info = inspect(cluster, PERSONA)
    assert info["Config"]["Image"] == f"{PROJECT}:claude-code"
    assert_hardened(info)
    worker = cluster.compose("exec", "-T", PERSONA, "python", "-c", WORKER_PROCESS)
    assert_worker_boxed(worker.stdout + worker.stderr)
    assert set(networks(info)) == {f"{PROJECT}_net-{PERSONA}"}
    assert set(networks(inspect(cluster, FAKE))) == {f"{PROJECT}_outside"}
    assert f"{PROJECT}_outside" not in networks(inspect(cluster, "orchestrator"))
    lookup = f"import socket; socket.getaddrinfo({FAKE!r}, {PORT})"
    direct = cluster.compose("exec", "-T", PERSONA, "python", "-c", lookup)
    assert direct.returncode != 0 and "gaierror" in direct.stderr, direct.stderr


def test_claude_code_calls_cross_the_egress_proxy_with_the_persona_key(
    cluster: ChaosCluster,
) -> None:
    run_id = cluster.submit("claude-code")
    summary: RunSummary = cluster.summary(run_id)
    assert summary.status == "succeeded", summary
    (result,) = summary.tasks
    assert (result.status, [a.path for a in result.artifacts]) == ("succeeded", ["hello.md"])
    run_dir = cluster.folder / "results" / run_id
    assert (run_dir / PERSONA / "c1" / "hello.md").read_text() == CONTENT

    calls = recorded_calls(cluster.chaos / "record")
    assert len(calls) == 3, [c.text[-200:] for c in calls]  # Claude Code made no other call
    assert "Write" in calls[0].tools and "cc_version=" in calls[0].text  # the CLI called
    assert summary.usage_total == Usage.total(c.usage for c in calls)

    auths = auth_records(cluster.chaos / "record")
    keys = sorted((PROMPT in a.system, a.key) for a in auths)  # the gateway's token: never
    assert keys == [(False, ORCHESTRATOR_KEY), (True, PERSONA_KEY), (True, PERSONA_KEY)]

    egress = cluster.compose("logs", "--no-color", "egress").stdout
    worker_ip = networks(inspect(cluster, PERSONA))[f"{PROJECT}_net-{PERSONA}"]["IPAddress"]
    assert f"tunnel from {worker_ip} to {FAKE}:{PORT}" in egress, egress[-3000:]


def test_with_the_endpoint_down_the_task_fails_with_the_reason(cluster: ChaosCluster) -> None:
    stopped = cluster.compose("stop", FAKE)
    assert stopped.returncode == 0, stopped.stderr
    run_id = cluster.submit("endpoint-down")
    summary = cluster.summary(run_id)
    (result,) = summary.tasks
    assert result.status == "failed", result
    # e.g. "Anthropic API failed: Connection to anthropic-fake:8443 failed: 502 Bad Gateway;
    # check that the endpoint ... is up and reachable (... make logs-egress)"
    assert result.error and f"{FAKE}:{PORT} failed: 502" in result.error, result.error
    assert "make logs-egress" in result.error
    attempts = summary.attempts["c1"]  # the task's retries, each failing the same way
    assert [(a.status, a.error) for a in attempts] == [("failed", result.error)] * 3
    egress = cluster.compose("logs", "--no-color", "egress").stdout
    assert f"cannot reach {FAKE}:{PORT}" in egress, egress[-3000:]
