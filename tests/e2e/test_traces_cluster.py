"""Traces across containers: `make up OBSERVE=1` starts Arize Phoenix (profile observe) and
points every service's OTLP exporter at it; a run of two tasks on two persona workers
(ScriptedLLM in each container, tests/e2e/chaos.py's cluster) arrives in Phoenix as one
trace: the orchestrator's run span, each worker's ``invoke_agent`` span under it, the
calls' ``chat`` spans under those, read back through Phoenix's REST API
(``GET /v1/projects/default/spans``) on the port published on 127.0.0.1.

Measured here (2 cores, images cached): ~31 s, most of it `make up` and `make clean`
(building the phoenix image the first time: ~80 s more).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from crewbox import telemetry
from tests.e2e.chaos import ChaosCluster, script, task
from tests.e2e.cluster import compose_answers, copy_project, project_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PLANS = {"traced": [task("p1", "marie"), task("p2", "anga")]}
SPANS_WAIT_S = 60.0
"""How long the spans may take to reach Phoenix (each process batches them, 5 s)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    folder = copy_project(tmp_path_factory.mktemp("traces"))
    cluster = ChaosCluster(folder, project_name("crewbox-otel"))
    cluster.extra_env["CREWBOX_PHOENIX_PORT"] = str(free_port())
    steps = [{**step, "delay_s": 0} for step in script(PLANS)]
    try:
        cluster.up(PLANS, steps, "OBSERVE=1", "PERSONAS=marie anga")
        yield cluster
    finally:
        cluster.make("clean")


def phoenix_spans(cluster: ChaosCluster) -> list[dict[str, Any]]:
    """Every span of Phoenix's default project, through its REST API on the host's port."""
    port = cluster.extra_env["CREWBOX_PHOENIX_PORT"]
    url = f"http://127.0.0.1:{port}/v1/projects/default/spans?limit=1000"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return list(json.load(answer)["data"])


def run_trace(cluster: ChaosCluster, run_id: str) -> list[dict[str, Any]]:
    """The spans of the trace whose root is ``run_id``'s run span, once it holds both
    attempts and the synthesis (waits up to SPANS_WAIT_S)."""
    deadline = time.monotonic() + SPANS_WAIT_S
    names: list[str] = []
    while time.monotonic() < deadline:
        spans = phoenix_spans(cluster)
        roots = [s for s in spans if s["attributes"].get(telemetry.RUN_ID) == run_id]
        roots = [s for s in roots if s["parent_id"] is None]
        if roots:
            trace_id = roots[0]["context"]["trace_id"]
            found = [s for s in spans if s["context"]["trace_id"] == trace_id]
            names = sorted(s["name"] for s in found)
            if {"invoke_agent marie", "invoke_agent anga", "synthesize"} <= set(names):
                return found
        time.sleep(1)
    raise AssertionError(f"run {run_id}: no whole trace in Phoenix; its spans: {names}")


def test_a_cluster_runs_spans_arrive_in_phoenix_as_one_trace(cluster: ChaosCluster) -> None:
    run_id = cluster.submit("traced")
    assert cluster.summary(run_id).status == "succeeded"

    spans = run_trace(cluster, run_id)
    by_id = {s["context"]["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "invoke_workflow crewbox"
    orchestrator_host = root["attributes"][telemetry.ORCHESTRATOR].split(":")[0]
    workers = {}
    for persona, task_id in (("marie", "p1"), ("anga", "p2")):
        (attempt,) = [s for s in spans if s["name"] == f"invoke_agent {persona}"]
        assert attempt["parent_id"] == root["context"]["span_id"]
        assert attempt["attributes"][telemetry.TASK_ID] == task_id
        workers[persona] = attempt["attributes"][telemetry.WORKER].split(":")[0]
        chats = [s for s in spans if s["parent_id"] == attempt["context"]["span_id"]]
        assert [c["name"].split(" ")[0] for c in chats] == ["chat"]
        assert chats[0]["attributes"]["gen_ai.usage.input_tokens"] == 1000
    # three containers: the orchestrator's and each persona's worker
    assert len({orchestrator_host, *workers.values()}) == 3, (orchestrator_host, workers)
    synthesize = next(s for s in spans if s["name"] == "synthesize")
    assert by_id[synthesize["parent_id"]] == root


def test_phoenix_is_published_on_loopback_only(cluster: ChaosCluster) -> None:
    port = cluster.extra_env["CREWBOX_PHOENIX_PORT"]
    done = cluster.compose("port", "phoenix", "6006")
    assert done.stdout.strip() == f"127.0.0.1:{port}", done.stderr
