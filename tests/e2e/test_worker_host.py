"""A second machine's workers (`make worker-host`) joining a cluster through Redis's
published TLS port, on two compose projects of this Docker engine that share no network:
the first ("host-a", `make up REDIS_TLS_PORT=0 PERSONAS=anga`) and a worker host
("host-b") that reaches it only through host.docker.internal and the published port, with
anga's Redis password and the CA copied over as files. anga's tasks run on host-b, `make
workers` on host-a shows host-b's worker, and killing host-b's project mid-task loses
nothing: the attempt is dispatched again within 15 s, to host-a's anga.

The published port itself refuses plain text and a wrong ACL password.

Measured here (2 cores shared with other test runs): 50 s in all with crewbox's image
cached on a quiet machine, 140-149 s when its code layer was built again on a busy one
(`make up` alone 94 s); h2 dispatched again 4.6 s, 6.0 s and 4.7 s after the kill (three
runs), with a 5 s heartbeat timeout.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
import redis
import yaml

from tests.e2e.chaos import ChaosCluster, scripted_override, task
from tests.e2e.cluster import Cluster, compose_answers, copy_project, project_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

HEARTBEAT_TIMEOUT_S = 5
REDISPATCH_BOUND_S = 15.0
"""What the issue asks: a lost attempt dispatched again within 15 s of its host's loss."""

PLAN = [task("h1", "anga"), task("h2", "anga", ["h1"])]
SYNTHESIS = {"match": "## Request\\n\\nchaos hosts", "text": "answer of hosts"}
STEPS_A = [  # host-a: h2 (its second attempt) at once
    {"match": "Task id: h2\\n", "text": "h2 done on host-a"},
    {"match": "Task id: h1\\n", "text": "h1 done on host-a"},
    SYNTHESIS,
    SYNTHESIS,
]
STEPS_B = [  # host-b: h1 at once; h2 long enough to be killed mid-task
    {"match": "Task id: h1\\n", "text": "h1 done on host-b"},
    {"match": "Task id: h2\\n", "delay_s": 120, "text": "h2 done on host-b (never)"},
]


class Hosts:
    """The two projects: ``a`` (the cluster) and ``b`` (its worker host)."""

    def __init__(self, a: ChaosCluster, b: Cluster) -> None:
        self.a, self.b = a, b

    def tls_port(self) -> int:
        """The host port Docker published host-a's Redis TLS port on."""
        redis_id = self.a.compose("ps", "-q", "redis").stdout.split()[0]
        return int(self.a.docker("port", redis_id, "6380/tcp").splitlines()[0].rsplit(":")[1])

    def start_worker_host(self) -> None:
        """Copy anga's Redis password and the CA to host-b (what an operator does), then
        `make worker-host` there.

        Raises:
            RuntimeError: `make worker-host` failed.
        """
        for name in ("redis/anga.password", "tls/ca.crt"):
            (self.b.folder / "secrets" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.a.folder / "secrets" / name, self.b.folder / "secrets" / name)
        chaos = self.b.folder / "chaos"
        for sub in ("record/steps", "record/calls"):
            (chaos / sub).mkdir(parents=True, exist_ok=True)
        for path in [chaos, *chaos.rglob("*")]:
            path.chmod(0o777)
        (chaos / "script.yaml").write_text(yaml.safe_dump(STEPS_B))
        (self.b.folder / "chaos.yml").write_text(yaml.safe_dump(scripted_override(("anga",))))
        url = f"rediss://host.docker.internal:{self.tls_port()}"
        done = self.b.make("worker-host", f"REDIS_URL={url}", "PERSONAS=anga")
        if done.returncode != 0:
            raise RuntimeError(f"make worker-host: {done.stdout[-3000:]}{done.stderr[-3000:]}")

    def on_b(self, worker: str) -> bool:
        """True when ``worker`` (``<container host>:<pid>``) ran in a container of host-b."""
        host = worker.rpartition(":")[0]
        return any(host.startswith(c[:12]) for c in self.b.containers())

    def wait_healthy(self, cluster: Cluster, service: str) -> None:
        """Until ``service``'s container is healthy (its worker registered in Redis).

        Raises:
            TimeoutError: not within 120 s.
        """
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ids = cluster.compose("ps", "-q", service).stdout.split()
            state = cluster.docker("inspect", "-f", "{{.State.Health.Status}}", *ids) if ids else ""
            if state.strip() == "healthy":
                return
            time.sleep(1)
        raise TimeoutError(f"{service} of {cluster.name} not healthy within 120 s")


NETWORK_NAMES = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"


def networks(cluster: Cluster) -> set[str]:
    """The Docker networks the running containers of ``cluster`` are on."""
    found: set[str] = set()
    for container in cluster.containers():
        names = cluster.docker(
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            container,
        )
        found.update(names.split())
    return found


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    a = ChaosCluster(
        copy_project(tmp_path_factory.mktemp("host-a")), project_name("crewbox-host-a")
    )
    a.extra_env.update(
        CREWBOX_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
        CREWBOX_HOST_NAME="host-a",
        REDIS_TLS_NAMES="host.docker.internal",
    )
    b = Cluster(
        copy_project(tmp_path_factory.mktemp("host-b")),
        project_name("crewbox-host-b"),
        env={
            "CREWBOX_HOST_NAME": "host-b",
            "ANTHROPIC_API_KEY": "sk-chaos-unused",
            "WORKER_HOST_FILES": "worker-host.yml:chaos.yml",
            "COMPOSE_FILE": "worker-host.yml:chaos.yml",
        },
    )
    try:
        a.up({"hosts": PLAN}, STEPS_A, ("PERSONAS=anga", "REDIS_TLS_PORT=0"))
        yield Hosts(a, b)
    finally:
        b.compose("down", "--remove-orphans", "--volumes")
        a.make("clean", "REDIS_TLS_PORT=0")


def test_a_worker_host_serves_anga_over_tls_and_its_loss_loses_no_task(hosts: Hosts) -> None:
    a, b = hosts.a, hosts.b
    assert a.compose("stop", "anga").returncode == 0  # anga's tasks can only go to host-b
    hosts.start_worker_host()
    shown = a.make("workers")
    print(shown.stdout)
    rows = [line for line in shown.stdout.splitlines() if "host-b/" in line]
    assert rows and "anga" in rows[0], shown.stdout + shown.stderr
    assert not networks(a) & networks(b), (networks(a), networks(b))  # another "host"

    run = a.submit("hosts")
    h1 = a.wait_for(run, lambda e: e.kind == "task_succeeded" and e.task_id == "h1")
    started = a.wait_for(run, lambda e: e.kind == "task_started" and e.task_id == "h2")
    assert hosts.on_b(str(started.data["worker"])), started.data
    assert a.compose("start", "anga").returncode == 0
    hosts.wait_healthy(a, "anga")

    assert b.compose("kill").returncode == 0  # host-b is lost, mid-task
    killed = time.time()
    again = a.wait_for(
        run, lambda e: e.kind == "task_dispatched" and e.task_id == "h2" and e.data["attempt"] > 1
    )
    print(f"h2 dispatched again {again.ts_s - killed:.1f}s after host-b was killed")
    assert again.ts_s - killed < REDISPATCH_BOUND_S

    summary = a.summary(run)
    assert {t.task_id: t.status for t in summary.tasks} == {"h1": "succeeded", "h2": "succeeded"}
    first, second = summary.attempts["h2"]
    assert first.status == "lost" and hosts.on_b(first.worker)
    assert second.status == "succeeded" and not hosts.on_b(second.worker)
    assert hosts.on_b(summary.attempts["h1"][0].worker), h1
    h2 = a.folder / "results" / run / "anga" / "h2"
    assert "h2 done on host-a" in (h2 / "result.json").read_text()


def test_the_published_port_refuses_plain_text_and_a_wrong_password(hosts: Hosts) -> None:
    port, ca = hosts.tls_port(), hosts.a.folder / "secrets" / "tls" / "ca.crt"
    password = (hosts.a.folder / "secrets" / "redis" / "anga.password").read_text().strip()
    plain = redis.Redis(port=port, username="anga", password=password, socket_timeout=5)
    with pytest.raises(redis.exceptions.RedisError):  # no TLS: no answer
        plain.ping()
    tls = {"port": port, "ssl": True, "ssl_ca_certs": str(ca), "username": "anga"}
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", password="not-anga-s", **tls).ping()
    assert redis.Redis(host="127.0.0.1", password=password, **tls).ping()
