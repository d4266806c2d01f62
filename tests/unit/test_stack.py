"""The Docker Swarm stack file (crewbox.stack) made from `docker compose config`: only what
`docker stack deploy` accepts, every persona with its network and secrets, replicas and
placement from the front matter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crewbox.cluster import ClusterError
from crewbox.stack import (
    HEADER,
    Placement,
    compose_config,
    placements,
    secret_key,
    size_bytes,
    stack_of,
    stack_text,
)
from tests.e2e.cluster import copy_project

REFUSED = ("build", "depends_on", "profiles", "extends", "restart", "network_mode")
"""Service keys `docker stack deploy` refuses (format 3.x) or that mean nothing to Swarm."""

IGNORED = ("security_opt", "mem_limit", "cpus", "pids_limit", "tmpfs")
"""Keys it ignores with a warning: each is moved under deploy or a mount, or dropped."""


def docker_cli() -> bool:
    """True when the docker CLI with the compose plugin is installed (no engine needed)."""
    if not shutil.which("docker"):
        return False
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with its override generated and its secrets prepared (marie
    with replicas 3 on nodes labelled big; fabien with no key)."""
    if not docker_cli():
        pytest.skip("needs the docker CLI with Compose v2")
    folder = copy_project(tmp_path_factory.mktemp("stack"))
    marie = folder / "prompts" / "marie.md"
    marie.write_text(marie.read_text().replace("---\n", "---\nreplicas: 3\nnode: big\n", 1))
    env = {**os.environ, "ANTHROPIC_API_KEY": ""}
    subprocess.run(["python3", "-m", "crewbox.cluster", "compose"], cwd=folder, check=True)
    names = ["anga", "fabien", "marie"]
    subprocess.run(["scripts/resolve-secrets.sh", *names], cwd=folder, env=env, check=True)
    for name in ("orchestrator", "anga", "marie"):
        (folder / "secrets" / "resolved" / f"{name}.key").write_text("sk-test")
    return folder


@pytest.fixture(scope="module")
def stack(project: Path) -> dict[str, Any]:
    placed = placements(project / "prompts", project / "workspaces")
    return stack_of("cbx", compose_config(project, ["llm"]), placed)


def test_no_service_has_a_key_swarm_refuses_or_ignores(stack: dict[str, Any]) -> None:
    assert sorted(stack["services"]) == [
        "anga", "egress", "fabien", "llm", "marie", "orchestrator", "redis", "redis-volume"
    ]  # fmt: skip
    for name, service in stack["services"].items():
        assert not set(service) & {*REFUSED, *IGNORED}, name
        assert service["deploy"]["endpoint_mode"] == "dnsrr"


def test_every_persona_has_its_network_secrets_and_limits(stack: dict[str, Any]) -> None:
    for persona in ("anga", "fabien", "marie"):
        service = stack["services"][persona]
        assert service["networks"] == [f"net-{persona}"]
        assert stack["networks"][f"net-{persona}"] == {
            "driver": "overlay", "internal": True, "attachable": False
        }  # fmt: skip
        assert service["secrets"][0] == {
            "source": f"redis-{persona}", "target": "redis_password",
            "uid": "0", "gid": "0", "mode": 0o400,
        }  # fmt: skip
        for shared in ("redis", "egress", "llm"):
            assert f"net-{persona}" in stack["services"][shared]["networks"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        limits = service["deploy"]["resources"]["limits"]
        assert limits == {"memory": str(768 * 2**20), "cpus": "1", "pids": 256}
        assert {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 256 * 2**20}} in service[
            "volumes"
        ]
        assert "/app/prompts" not in {v["target"] for v in service["volumes"]}


def test_a_persona_without_a_key_gets_no_key_secret(stack: dict[str, Any]) -> None:
    fabien = stack["services"]["fabien"]
    assert [s["target"] for s in fabien["secrets"]] == ["redis_password"]
    assert "CREWBOX_ANTHROPIC_API_KEY_FILE" not in fabien["environment"]
    assert "key-fabien" not in stack["secrets"]
    marie = stack["services"]["marie"]
    assert marie["environment"]["CREWBOX_ANTHROPIC_API_KEY_FILE"] == "/run/secrets/marie_key"


def test_each_task_registers_with_its_own_node_s_name(stack: dict[str, Any]) -> None:
    for name in ("marie", "orchestrator"):
        assert stack["services"][name]["environment"]["CREWBOX_HOST_NAME"] == "{{.Node.Hostname}}"


def test_replicas_and_placement_from_the_front_matter(stack: dict[str, Any]) -> None:
    marie, anga = stack["services"]["marie"]["deploy"], stack["services"]["anga"]["deploy"]
    assert marie["replicas"] == 3
    assert marie["placement"] == {"constraints": ["node.labels.crewbox == big"]}
    assert anga["replicas"] == 1 and "placement" not in anga
    for core in ("redis", "orchestrator", "llm"):
        constraints = stack["services"][core]["deploy"]["placement"]["constraints"]
        assert constraints == ["node.role == manager"]


def test_only_the_client_network_is_attachable_and_outside_is_not_internal(
    stack: dict[str, Any],
) -> None:
    attachable = [k for k, v in stack["networks"].items() if v["attachable"]]
    assert attachable == ["client-net"]
    assert stack["networks"]["outside"]["internal"] is False
    assert "networks" not in stack["services"]["redis-volume"]  # network_mode: none in Compose
    assert stack["networks"]["default"] == {
        "driver": "overlay", "internal": True, "attachable": False
    }  # fmt: skip
    assert stack["services"]["redis"]["deploy"]["restart_policy"] == {"condition": "any"}
    assert stack["services"]["redis-volume"]["deploy"]["restart_policy"] == {"condition": "none"}
    assert stack["services"]["redis"]["volumes"][0]["volume"] == {"nocopy": True}


def test_secret_names_follow_their_content(project: Path) -> None:
    assert secret_key("cbx", "k", b"a") != secret_key("cbx", "k", b"b")
    assert secret_key("cbx", "k", b"a").startswith("cbx_k_")


def test_docker_stack_config_accepts_the_file(stack: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "stack.yml"
    path.write_text(stack_text(stack))
    assert path.read_text().startswith(HEADER)
    done = subprocess.run(
        ["docker", "stack", "config", "--compose-file", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Ignoring" not in done.stderr  # nothing unsupported left
    assert json.loads(path.read_text().split("\n", 1)[1]) == stack


def test_bad_front_matter_is_one_line_naming_the_file(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    text = "---\nname: odile\ndescription: Lights.\nreplicas: {}\n---\nBody.\n"
    (prompts / "odile.md").write_text(text.format("many"))
    with pytest.raises(ClusterError, match=r"odile.md: replicas 'many': give a whole number"):
        placements(prompts, tmp_path / "workspaces")
    (prompts / "odile.md").write_text(text.format("2") + "")
    assert placements(prompts, tmp_path) == {"odile": Placement(2, None)}
    (prompts / "odile.md").write_text(text.format("2").replace("replicas", "node: a b\nx"))
    with pytest.raises(ClusterError, match="node 'a b'"):
        placements(prompts, tmp_path)


def test_sizes_read_as_docker_reads_them() -> None:
    assert size_bytes("256m") == 256 * 2**20 and size_bytes("16k") == 16384
    with pytest.raises(ClusterError, match="give a number"):
        size_bytes("lots")


def test_the_cli_says_in_one_line_when_docker_does_not_answer(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["python3", "-m", "crewbox.stack", "check"],
        cwd=root, env={"PATH": os.environ["PATH"], "DOCKER_HOST": f"unix://{tmp_path}/no.sock"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "crewbox: error: Docker does not answer; start it, then run `make stack` again\n"
    )


def test_the_stack_client_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(
        Path(__file__).resolve().parents[2] / "scripts" / "stack-client.sh", tmp_path / "scripts"
    )
    script = str(tmp_path / "scripts" / "stack-client.sh")
    usage = subprocess.run([script, "cbx"], capture_output=True, text=True, check=False)
    assert (usage.returncode, usage.stderr) == (
        2,
        "usage: scripts/stack-client.sh STACK crewbox ARGS...\n",
    )
    done = subprocess.run(
        [script, "cbx", "crewbox", "workers"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert (
        done.stderr == "crewbox: error: no secrets/redis/client.password; run `make stack` first\n"
    )
