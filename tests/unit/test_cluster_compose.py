"""The persona services generated from prompts/*.md (crewbox.cluster): one file adds one."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crewbox.cluster import (
    ENGINE_SERVICE,
    HEADER,
    OVERRIDE_FILE,
    ClusterError,
    ClusterPersona,
    allocate_subnets,
    override_text,
    read_personas,
    services_to_start,
    subnet_settings,
    with_engine,
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
    assert odile["secrets"] == [
        {"source": "redis-odile", "target": "redis_password"},
        {"source": "key-odile", "target": "odile_key"},
    ]
    assert odile["networks"] == ["net-odile"]
    assert "volumes" not in data["services"]["x"]  # no workspace: no mount
    for shared in ("redis", "egress", "llm", "phoenix"):
        assert data["services"][shared]["networks"] == ["net-odile", "net-x"]
    assert data["networks"]["net-odile"] == {
        "internal": True,
        "ipam": {"config": [{"subnet": "10.213.0.0/28"}]},
    }
    assert data["networks"]["net-x"]["ipam"] == {"config": [{"subnet": "10.213.0.16/28"}]}
    assert data["secrets"]["key-odile"] == {"file": "./secrets/resolved/odile.key"}
    assert data["secrets"]["redis-odile"] == {"file": "./secrets/redis/odile.password"}


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


def test_no_generated_top_level_key_starts_with_x_dash() -> None:
    """Compose reads top-level keys starting with ``x-`` as extension fields: a persona named
    ``x`` or ``x-api-integration`` must still get its network and secrets."""
    data = parsed(override_text([ClusterPersona("x", None), ClusterPersona("x-api", None)]))
    for section in ("networks", "secrets"):
        assert not [key for key in data[section] if key.startswith("x-")]
    assert data["services"]["x-api"]["networks"] == ["net-x-api"]


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_compose_accepts_x_dash_names_and_keys(project: Path) -> None:
    """`docker compose config` reads the generated file of a persona named ``x-...`` whose
    front matter has ``x-`` keys of its own (none is copied)."""
    for name in ("docker-compose.yml",):
        shutil.copy2(ROOT / name, project / name)
    (project / "prompts" / "xapi.md").write_text(
        "---\nname: x-api-integration\ndescription: d\nx-api-integration: true\n"
        "x-color: {bad: yaml\n---\nbody"
    )
    env = {**os.environ, "COMPOSE_PROJECT_NAME": "crewbox-unit-xcheck"}
    command = [sys.executable, "-m", "crewbox.cluster", "compose", "--project", str(project)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    text = (project / OVERRIDE_FILE).read_text()
    assert "x-color" not in text  # front-matter keys are never copied
    done = subprocess.run(
        ["docker", "compose", "config", "--services"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "x-api-integration" in done.stdout.split()


def test_subnets_are_carved_around_taken_ones_and_kept_ones_stay() -> None:
    pool = ipaddress.IPv4Network("10.213.0.0/26")  # four /28s
    taken = [ipaddress.IPv4Network("10.213.0.0/28")]
    kept = {"b": ipaddress.IPv4Network("10.213.0.32/28")}
    got = allocate_subnets(["a", "b", "c"], pool, 28, taken, kept)
    assert {n: str(s) for n, s in got.items()} == {
        "a": "10.213.0.16/28",
        "b": "10.213.0.32/28",
        "c": "10.213.0.48/28",
    }
    with pytest.raises(ClusterError, match="no free /28 left for 4 personas"):
        allocate_subnets(["a", "b", "c", "d"], pool, 28, taken, kept)


def test_a_hundred_personas_fit_in_the_default_range_beside_other_networks() -> None:
    """100 networks of /28 in 10.213.0.0/16, with another project holding part of it."""
    pool, prefix = subnet_settings({})
    taken = [ipaddress.IPv4Network("10.213.0.0/24")]
    got = allocate_subnets([f"p{i}" for i in range(100)], pool, prefix, taken)
    assert len(set(got.values())) == 100
    assert not any(s.overlaps(taken[0]) for s in got.values())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CREWBOX_PERSONA_SUBNETS": "10.213.0.0/33"}, "give a range such as"),
        ({"CREWBOX_PERSONA_SUBNETS": "10.213.0.0/16", "CREWBOX_PERSONA_PREFIX": "16"}, "longer"),
        ({"CREWBOX_PERSONA_PREFIX": "30"}, "at most 29"),
    ],
)
def test_bad_range_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        subnet_settings(env)


def test_make_up_personas_names_the_services_to_start() -> None:
    catalog = [ClusterPersona("anga", None), ClusterPersona("marie", None)]
    assert services_to_start(catalog, ["marie"]) == ["redis", "egress", "orchestrator", "marie"]
    with pytest.raises(ClusterError, match="no persona 'bob' in prompts/"):
        services_to_start(catalog, ["marie", "bob"])


def claude_code_persona(project: Path, name: str = "cody", engine: str = "Claude-Code") -> None:
    """Add persona ``name`` with front matter ``engine: <engine>`` to ``project``."""
    (project / "prompts" / f"{name}.md").write_text(
        f"---\nname: {name}\ndescription: codes with Claude Code\nengine: {engine}\n---\nbody"
    )


def test_claude_code_personas_share_one_image_built_once(project: Path) -> None:
    """Two personas with ``engine: claude-code`` name the claude-code image; the others keep
    the template's; only the build-only service (in a profile, never started) builds it."""
    claude_code_persona(project, "cody")
    claude_code_persona(project, "dora", "claude-code")
    personas, warnings = read_personas(project / "prompts", project / "workspaces")
    assert warnings == []
    assert {p.name: p.engine for p in personas}["cody"] == "claude-code"
    services = parsed(override_text(personas))["services"]
    image = "${COMPOSE_PROJECT_NAME:-crewbox}:claude-code"
    assert services["cody"]["image"] == services["dora"]["image"] == image
    assert "image" not in services["anga"] and "CREWBOX_ENGINE" not in services["cody"]
    assert [name for name, s in services.items() if "build" in s] == [ENGINE_SERVICE]
    engine = services[ENGINE_SERVICE]
    assert engine["image"] == image and engine["profiles"] == ["claude-code"]
    assert engine["build"]["dockerfile"] == "Dockerfile.claude-code"
    assert engine["build"]["args"] == {"BASE": "${COMPOSE_PROJECT_NAME:-crewbox}:local"}
    assert ENGINE_SERVICE not in parsed(override_text(personas[:1]))["services"]


def test_crewbox_engine_sets_every_personas_image_and_environment(project: Path) -> None:
    personas, _ = read_personas(project / "prompts", project / "workspaces")
    services = parsed(override_text(with_engine(personas, {"CREWBOX_ENGINE": "claude-code"})))[
        "services"
    ]
    for name in ("anga", "fabien", "marie"):
        assert services[name]["image"].endswith(":claude-code")
        assert services[name]["environment"]["CREWBOX_ENGINE"] == "claude-code"
    claude_code_persona(project)
    personas, _ = read_personas(project / "prompts", project / "workspaces")
    builtin = parsed(override_text(with_engine(personas, {"CREWBOX_ENGINE": "builtin"})))
    assert ENGINE_SERVICE not in builtin["services"]
    assert builtin["services"]["cody"]["environment"]["CREWBOX_ENGINE"] == "builtin"
    with pytest.raises(ClusterError, match="CREWBOX_ENGINE='gpt'"):
        with_engine(personas, {"CREWBOX_ENGINE": "gpt"})


def test_an_unknown_engine_is_a_warning(project: Path) -> None:
    claude_code_persona(project, engine="emacs")
    personas, warnings = read_personas(project / "prompts", project / "workspaces")
    assert {p.name: p.engine for p in personas}["cody"] == "builtin"
    assert any("engine 'emacs' is unknown" in w for w in warnings)


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_compose_resolves_the_claude_code_image_per_project(project: Path) -> None:
    """`docker compose config`: the claude-code persona runs ``<project>:claude-code``, the
    others ``<project>:local``; the build-only service starts only with its profile."""
    shutil.copy2(ROOT / "docker-compose.yml", project / "docker-compose.yml")
    claude_code_persona(project)
    env = {**os.environ, "COMPOSE_PROJECT_NAME": "crewbox-unit-engine"}
    env.pop("CREWBOX_ENGINE", None)
    command = [sys.executable, "-m", "crewbox.cluster", "compose", "--project", str(project)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)

    def config(*args: str) -> str:
        done = subprocess.run(
            ["docker", "compose", *args, "config", "--format", "json"],
            cwd=project, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    services = yaml.safe_load(config())["services"]
    assert services["cody"]["image"] == "crewbox-unit-engine:claude-code"
    assert services["anga"]["image"] == "crewbox-unit-engine:local"
    assert ENGINE_SERVICE not in services
    built = yaml.safe_load(config("--profile", "claude-code"))["services"][ENGINE_SERVICE]
    assert built["build"]["args"] == {"BASE": "crewbox-unit-engine:local"}
