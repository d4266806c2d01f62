"""Sixty personas side by side: `make up` of 57 generated persona files plus the three shipped
ones, on a cluster of its own, beside another compose project that holds ten networks of
Docker's default address pools; then a run using five of them completes.

Each persona's network is a /28 of CREWBOX_PERSONA_SUBNETS, not a default-pool bridge: with
one default-pool network per persona, `make up` stopped at about 25 ("could not find an
available, non-overlapping IPv4 address pool"). ScriptedLLM answers (the LLM is the only thing
faked); workers run with CREWBOX_WORKER_MEMORY=192m and a 120 s health-check interval, so 60
containers start on 2 cores. Prints `make up`'s seconds and the containers' memory (docker
stats), the figures of README's "Many personas". Takes about 6 minutes on 2 shared cores, so
it runs only with CREWBOX_E2E_MANY=1 (`make e2e-many`): the whole suite stays well under 20.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.chaos import ChaosCluster, task
from tests.e2e.cluster import compose_answers, copy_project, project_name

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        os.environ.get("CREWBOX_E2E_MANY") != "1",
        reason="about 6 minutes: run it with CREWBOX_E2E_MANY=1 (make e2e-many)",
    ),
]

GENERATED = 57
"""Persona files written besides the three shipped ones: 60 personas."""

USED = [f"many-{i:02d}" for i in (1, 12, 23, 34, 45)]
"""The personas the run uses."""

PLAN = [
    task("a", USED[0]),
    task("b", USED[1]),
    task("c", USED[2], ["a"]),
    task("d", USED[3], ["b"]),
    task("e", USED[4], ["c", "d"]),
]
STEPS = [
    *[{"match": f"Task id: {t['id']}\\n", "text": f"{t['id']} done"} for t in PLAN],
    *[{"match": "## Request\\n\\nchaos many", "text": "answer of many"}] * 2,
]

NEIGHBOUR = {
    "services": {
        "idle": {
            "image": "${CREWBOX_REDIS_IMAGE:-redis:7-alpine}",
            "command": ["sleep", "infinity"],
            "networks": [f"n{i}" for i in range(10)],
        }
    },
    "networks": {f"n{i}": {} for i in range(10)},
}
"""Another compose project on the engine: ten networks from Docker's default pools."""


def persona_file(index: int) -> str:
    """A generated persona, with a front-matter key starting with ``x-`` on some."""
    extra = "x-api-integration: true\n" if index % 4 == 0 else ""
    return (
        f"---\nname: many-{index:02d}\ndescription: Specialist number {index}.\n"
        f"tools: Read, Write\nmodel: inherit\ncolor: blue\n{extra}---\nYou are careful.\n"
    )


SCRIPTED = {
    "environment": {
        "CREWBOX_PROVIDER": "scripted",
        "CREWBOX_SCRIPT_PATH": "/chaos/script.yaml",
        "CREWBOX_SCRIPT_RECORD_DIR": "/chaos/record",
    },
    "volumes": ["./chaos:/chaos"],
}
"""ScriptedLLM for the orchestrator and the personas of USED (the others are never called)."""


def prepare(cluster: ChaosCluster) -> None:
    """Write the persona files, chaos.yml, the script and workflows/many.yaml."""
    prompts = cluster.folder / "prompts"
    for index in range(1, GENERATED + 1):
        (prompts / f"many-{index:02d}.md").write_text(persona_file(index))
    override = {"services": {name: SCRIPTED for name in ("orchestrator", *USED)}}
    (cluster.folder / "chaos.yml").write_text(yaml.safe_dump(override))
    for sub in ("record/steps", "record/calls"):
        (cluster.chaos / sub).mkdir(parents=True, exist_ok=True)
    for path in [cluster.chaos, *cluster.chaos.rglob("*")]:
        path.chmod(0o777)
    (cluster.chaos / "script.yaml").write_text(yaml.safe_dump(STEPS))
    plan = {"request": "chaos many", "tasks": PLAN}
    (cluster.folder / "workflows" / "many.yaml").write_text(yaml.safe_dump(plan))


def neighbour(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose ARGS` of the neighbouring project."""
    return subprocess.run(
        ["docker", "compose", "-p", project_name("crewbox-neighbour"), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def memory_mib(cluster: ChaosCluster) -> dict[str, float]:
    """Each running container's memory use (docker stats, MiB) by name."""
    ids = cluster.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={cluster.name}")
    out = cluster.docker("stats", "--no-stream", "--format", "{{json .}}", *ids.split())
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1024 / 1024}
    found = {}
    for line in out.splitlines():
        row = json.loads(line)
        used = row["MemUsage"].split("/")[0].strip()
        unit = next(u for u in units if used.endswith(u))
        found[row["Name"]] = float(used[: -len(unit)]) * units[unit]
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    """The neighbour up, then `make up` of 60 personas, timed; both down afterwards."""
    if not compose_answers():
        pytest.skip("needs a Docker engine with Compose v2 (.ci/run starts one)")
    folder = copy_project(tmp_path_factory.mktemp("many"))
    (folder / "neighbour").mkdir()
    (folder / "neighbour" / "docker-compose.yml").write_text(yaml.safe_dump(NEIGHBOUR))
    made = ChaosCluster(folder, project_name("crewbox-many"))
    made.extra_env.update(CREWBOX_WORKER_MEMORY="192m", CREWBOX_HEALTHCHECK_INTERVAL="120s")
    try:
        started = neighbour(folder / "neighbour", "up", "-d")
        assert started.returncode == 0, started.stderr
        prepare(made)
        began = time.monotonic()
        up = made.make("up", timeout_s=900)
        up_s = time.monotonic() - began
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        memory = memory_mib(made)
        workers = [v for k, v in memory.items() if "many-" in k]
        print(
            f"\nmake up of 60 personas: {up_s:.0f} s; {len(memory)} containers, "
            f"{sum(memory.values()):.0f} MiB in all, workers {min(workers):.0f}-"
            f"{max(workers):.0f} MiB (mean {sum(workers) / len(workers):.0f})"
        )
        yield made
    finally:
        made.make("clean")
        neighbour(folder / "neighbour", "down", "-v")


def test_sixty_personas_start_beside_another_project_and_five_of_them_run(
    cluster: ChaosCluster,
) -> None:
    running = cluster.compose("ps", "--services", "--status", "running").stdout.split()
    assert sum(1 for s in running if s.startswith("many-")) == GENERATED
    assert {"marie", "anga", "fabien"} <= set(running)
    pool = ipaddress.IPv4Network("10.213.0.0/16")
    inspect = cluster.docker("network", "inspect", f"{cluster.name}_net-{USED[0]}")
    subnet = ipaddress.IPv4Network(json.loads(inspect)[0]["IPAM"]["Config"][0]["Subnet"])
    assert subnet.subnet_of(pool) and subnet.prefixlen == 28
    assert neighbour(cluster.folder / "neighbour", "ps", "-q").stdout.strip()
    began = time.monotonic()
    run = cluster.submit("many")
    summary = cluster.summary(run)
    print(f"the run of 5 tasks on 5 of the 60 personas: {time.monotonic() - began:.0f} s")
    assert {t.task_id: t.status for t in summary.tasks} == dict.fromkeys("abcde", "succeeded")
    assert {t.task_id: t.persona for t in summary.tasks} == {t["id"]: t["persona"] for t in PLAN}
