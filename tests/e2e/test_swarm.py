"""The cluster on Docker Swarm (`make stack`), on a single-node swarm made by the test.

A copy of the project, every service on the scripted LLM (tests/e2e/chaos.py's override and
script: each task's call takes TASK_S), is deployed with `make stack` as stack
``crewbox-swarm<suffix>``. A first run completes although marie's task container is
`docker kill`ed mid-task (Swarm starts a new one; the orchestrator dispatches the task again);
then `docker service scale <stack>_marie=2` adds a worker, and a run of four parallel marie
tasks is served by both replicas, the new one included. From marie's container only redis
and egress answer, and `make stack` run again updates the stack in place.

The swarm is made only when the engine is in none (``docker swarm init`` on the host's
primary address, overlay subnets from POOL, apart from CREWBOX_PERSONA_SUBNETS and Docker's
bridge pools), and left (``docker swarm leave --force``) afterwards only then; an existing
swarm is used as it is when this engine manages it.

Measured, image layers cached, 2 cores shared with other test runs: 105 s and 116 s in all
(deploy 24-32 s with the workflows' layer rebuilt, the killed-worker run 23-27 s, the scale and
the second run 19-25 s, the reach check 10 s, `make stack` again 1-2 s, teardown 17 s).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.chaos import WAIT_S, ChaosCluster, started, task
from tests.e2e.cluster import Cluster, compose_answers, copy_project, project_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

STACK = project_name("crewbox-swarm")
POOL = "10.215.0.0/16"
"""The overlay networks' address pool of a swarm the test makes."""

PLANS: dict[str, list[dict[str, Any]]] = {
    "swarm-first": [task("f1", "marie"), task("f2", "anga"), task("f3", "marie", ["f1"])],
    "swarm-scaled": [task(f"s{i}", "marie") for i in range(1, 5)],
}


def docker(*args: str, check: bool = True) -> str:
    """`docker ARGS`' standard output.

    Raises:
        RuntimeError: it failed and ``check`` (its standard error in the message).
    """
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def primary_address() -> str:
    """The source address of this host's default route (Swarm refuses loopback): a UDP
    socket "connected" to an outside address sends nothing but gets that source."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))  # TEST-NET-2 (RFC 5737): never reached
        return str(probe.getsockname()[0])


def test_make_stack_on_an_engine_in_no_swarm_says_to_init(tmp_path: Path) -> None:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    if docker("info", "--format", "{{.Swarm.LocalNodeState}}") == "active":
        pytest.skip("this engine is in a swarm already")
    done = Cluster(copy_project(tmp_path), STACK).make("stack")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[:-1] == [  # then make's own "Error 2" line
        "crewbox: error: this Docker engine is not a swarm manager: run `docker swarm init` "
        "(README, Docker Swarm), or `make stack` on a manager node"
    ]


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A swarm this engine manages: made (and left afterwards) when there was none."""
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
    if state.startswith("active") and not state.endswith("true"):
        pytest.skip("this engine is a swarm worker, not a manager")
    made = not state.startswith("active")
    had_gwbridge = "docker_gwbridge" in docker("network", "ls", "--format", "{{.Name}}")
    if made:
        docker(
            "swarm", "init", "--advertise-addr", primary_address(),
            "--default-addr-pool", POOL, "--default-addr-pool-mask-length", "24",
        )  # fmt: skip
    try:
        yield
    finally:
        if made:
            docker("swarm", "leave", "--force", check=False)
            if not had_gwbridge:
                docker("network", "rm", "docker_gwbridge", check=False)


class StackCluster(ChaosCluster):
    """ChaosCluster's project deployed as a Swarm stack (`make stack`)."""

    def submit(self, plan_name: str) -> str:
        """Submit ``workflows/<plan_name>.yaml`` detached through the stack's one-off client;
        returns the run id."""
        done = subprocess.run(
            ["scripts/stack-client.sh", self.name, "crewbox", "submit", "--plan",
             f"workflows/{plan_name}.yaml", "--detach"],
            cwd=self.folder, env=self.env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"submit failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    def tasks_of(self, service: str) -> list[str]:
        """Ids of the running containers of ``service``'s tasks."""
        return docker(
            "ps", "-q", "--no-trunc",
            "--filter", f"label=com.docker.swarm.service.name={self.name}_{service}",
        ).split()  # fmt: skip

    def wait_running(self, service: str, count: int) -> list[str]:
        """The container ids once ``count`` tasks of ``service`` run and are healthy.

        Raises:
            TimeoutError: not within WAIT_S.
        """
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            ids = self.tasks_of(service)
            health = [docker("inspect", "-f", "{{.State.Health.Status}}", i, check=False)
                      for i in ids]  # fmt: skip
            if len(ids) == count and all(h == "healthy" for h in health):
                return ids
            time.sleep(1)
        raise TimeoutError(f"{service}: not {count} healthy tasks within {WAIT_S:.0f}s")

    def teardown(self) -> None:
        """`make stack-down`, then its Redis volume once its containers are gone."""
        self.make("stack-down", timeout_s=120)
        deadline = time.monotonic() + 60
        label = f"label=com.docker.stack.namespace={self.name}"
        while docker("ps", "-aq", "--filter", label) and time.monotonic() < deadline:
            time.sleep(1)
        docker("volume", "rm", f"{self.name}_redis-data", check=False)


@pytest.fixture(scope="module")
def stack(swarm: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackCluster]:
    cluster = StackCluster(copy_project(tmp_path_factory.mktemp("swarm")), STACK)
    cluster.prepare(PLANS)
    try:
        done = cluster.make("stack")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        for persona in ("marie", "anga", "fabien", "orchestrator"):
            cluster.wait_running(persona, 1)
        yield cluster
    finally:
        cluster.teardown()


def worker_hosts(cluster: StackCluster, run_id: str, persona: str) -> set[str]:
    """The container host names of the workers that started ``persona``'s tasks."""
    return {
        str(e.data["worker"]).rpartition(":")[0]
        for e in cluster.events(run_id)
        if e.kind == "task_started" and e.persona == persona
    }


def test_a_killed_task_container_is_replaced_and_the_run_completes(
    stack: StackCluster,
) -> None:
    before = stack.tasks_of("marie")
    run = stack.submit("swarm-first")
    stack.wait_for(run, started("f1"))
    docker("kill", before[0])
    summary = stack.summary(run)
    assert summary.status == "succeeded", summary
    assert [t.status for t in summary.tasks] == ["succeeded"] * 3
    after = stack.wait_running("marie", 1)
    assert after != before  # Swarm started a new task container


def test_a_scaled_persona_s_new_replica_takes_tasks(stack: StackCluster) -> None:
    old = stack.wait_running("marie", 1)
    docker("service", "scale", "--detach", f"{STACK}_marie=2")
    new = [c for c in stack.wait_running("marie", 2) if c not in old]
    run = stack.submit("swarm-scaled")
    summary = stack.summary(run)
    assert summary.status == "succeeded", summary
    hosts = worker_hosts(stack, run, "marie")
    assert len(hosts) == 2, hosts
    assert any(new[0].startswith(h) for h in hosts), (hosts, new)


REACH = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def reach(pair):
    try:
        socket.create_connection(tuple(pair), timeout=3).close()
        return "open"
    except OSError as exc:
        return type(exc).__name__
pairs = json.loads(sys.argv[1])
with ThreadPoolExecutor(len(pairs)) as pool:  # a failed lookup waits out the DNS timeout
    print(json.dumps(dict(zip([h for h, _ in pairs], pool.map(reach, pairs)))))
"""
"""Run in a container: which of the (host, port) pairs it can open a connection to."""


def test_a_persona_reaches_redis_and_egress_only(stack: StackCluster) -> None:
    targets = [["redis", 6379], ["egress", 3128], ["anga", 8080], ["orchestrator", 8080],
               [primary_address(), 2377]]  # fmt: skip
    container = stack.tasks_of("marie")[0]
    found = json.loads(
        docker("exec", "--user", "10001", container, "python", "-c", REACH, json.dumps(targets))
    )
    assert found["redis"] == found["egress"] == "open"
    assert found["anga"] == found["orchestrator"] == "gaierror"  # not on marie's network
    assert found[primary_address()] == "OSError"  # internal overlay: no route off it


def test_make_stack_again_updates_the_stack_in_place(stack: StackCluster) -> None:
    before = stack.tasks_of("anga")
    done = stack.make("stack")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Updating service" in done.stdout
    assert stack.wait_running("anga", 1) == before  # same spec, same secrets: not restarted


def test_the_stack_is_hardened_as_the_compose_cluster(stack: StackCluster) -> None:
    spec = json.loads(docker("service", "inspect", f"{STACK}_marie"))[0]["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["ReadOnly"] is True and container["Init"] is True
    assert container["CapabilityDrop"] == ["ALL"]
    assert sorted(container["CapabilityAdd"]) == [
        "CAP_DAC_READ_SEARCH", "CAP_SETGID", "CAP_SETUID"
    ]  # fmt: skip
    assert {m["Target"]: m["Type"] for m in container["Mounts"]}["/tmp"] == "tmpfs"
    secrets = {s["File"]["Name"]: s["File"] for s in container["Secrets"]}
    assert secrets["redis_password"]["Mode"] == 0o400 and secrets["redis_password"]["UID"] == "0"
    assert spec["TaskTemplate"]["Resources"]["Limits"]["Pids"] == 256
    nets = json.loads(docker("network", "inspect", f"{STACK}_net-marie"))[0]
    assert nets["Driver"] == "overlay" and nets["Internal"] is True
    assert nets["Attachable"] is False
    container_id = stack.tasks_of("marie")[0]
    node = docker("info", "--format", "{{.Name}}")
    assert docker("exec", container_id, "printenv", "CREWBOX_HOST_NAME") == node  # its node's
    default = json.loads(docker("network", "inspect", f"{STACK}_default"))[0]
    assert default["Internal"] is True  # redis-volume's, alone
