"""The persona services generated from prompts/*.md (crewbox.cluster): one file adds one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crewbox.cluster import (
    HEADER,
    OVERRIDE_FILE,
    ClusterError,
    ClusterPersona,
    override_text,
    read_personas,
    write_override,
)
from tests.conftest import ROOT


class ComposeLoader(yaml.SafeLoader):
    """PyYAML with Compose's ``!reset`` tag (an empty value)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: [])


def parsed(text: str) -> dict[str, Any]:
    data = yaml.load(text, Loader=ComposeLoader)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "workspaces", tmp_path / "workspaces")
    return tmp_path


def test_the_shipped_personas_and_their_workspaces() -> None:
    personas, warnings = read_personas(ROOT / "prompts", ROOT / "workspaces")
    assert personas == [
        ClusterPersona("anga", "code"),
        ClusterPersona("fabien", "marketing"),
        ClusterPersona("marie", "dance"),
    ]
    assert warnings == []


def test_each_persona_gets_its_service_secrets_network_and_workspace() -> None:
    data = parsed(override_text([ClusterPersona("odile", "lighting"), ClusterPersona("x", None)]))
    odile = data["services"]["odile"]
    assert odile["extends"] == {"file": "docker-compose.yml", "service": "worker-template"}
    assert odile["profiles"] == [] and odile["command"][-1] == "odile"
    assert odile["environment"] == {
        "CREWBOX_REDIS_USERNAME": "odile",
        "CREWBOX_ANTHROPIC_API_KEY_FILE": "/run/secrets/odile_key",
    }
    assert odile["volumes"] == ["./workspaces/lighting:/workspace:ro"]
    assert odile["secrets"] == [{"source": "odile_redis", "target": "redis_password"}, "odile_key"]
    assert odile["networks"] == ["odile-net"]
    assert "volumes" not in data["services"]["x"]  # no workspace: no mount
    for shared in ("redis", "egress", "llm"):
        assert data["services"][shared]["networks"] == ["odile-net", "x-net"]
    assert data["networks"]["odile-net"] == {"internal": True}
    assert data["secrets"]["odile_key"] == {"file": "./secrets/resolved/odile.key"}
    assert data["secrets"]["odile_redis"] == {"file": "./secrets/redis/odile.password"}


def test_files_that_cannot_be_personas_are_skipped_with_a_warning(project: Path) -> None:
    prompts = project / "prompts"
    (prompts / "redis.md").write_text("---\nname: redis\ndescription: d\n---\nx")
    (prompts / "nameless.md").write_text("---\ndescription: d\n---\nx")
    (prompts / "nodesc.md").write_text("---\nname: quiet\n---\nx")
    (prompts / "lost.md").write_text("---\nname: lost\ndescription: d\nworkspace: gone\n---\nx")
    (prompts / "escape.md").write_text("---\nname: esc\ndescription: d\nworkspace: ../x\n---\nx")
    personas, warnings = read_personas(prompts, project / "workspaces")
    names = [p.name for p in personas]
    assert names == ["anga", "esc", "fabien", "lost", "marie"]
    assert {p.name: p.workspace for p in personas}["lost"] is None
    assert {p.name: p.workspace for p in personas}["esc"] is None
    joined = "\n".join(warnings)
    assert "redis.md: skipped: 'redis' is the name of a core service" in joined
    assert "nameless.md: skipped: no valid 'name'" in joined
    assert "nodesc.md: skipped: no 'description'" in joined
    assert "lost.md: no folder workspaces/gone" in joined
    assert "escape.md: workspace '../x' is not a folder name" in joined
    assert len(warnings) == 5  # the role prompts (orchestrator, synthesizer) are silent


def test_a_generated_file_is_rewritten_and_a_users_file_never(project: Path) -> None:
    path = write_override(project, [ClusterPersona("marie", "dance")])
    assert path.read_text().startswith(HEADER)
    write_override(project, [ClusterPersona("anga", "code")])
    assert "anga" in path.read_text() and "marie:" not in path.read_text()
    path.write_text("services:\n  mine: {image: x}\n")
    with pytest.raises(ClusterError, match="was not written by crewbox"):
        write_override(project, [])
    assert path.read_text() == "services:\n  mine: {image: x}\n"


def test_the_command_line_names_and_one_line_errors(project: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "crewbox.cluster", *args, "--project", str(project)]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)

    assert run("names").stdout.split() == ["anga", "fabien", "marie"]
    assert run("compose").returncode == 0 and (project / OVERRIDE_FILE).exists()
    (project / OVERRIDE_FILE).write_text("services: {}\n")
    refused = run("compose")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "crewbox: error:" in refused.stderr
