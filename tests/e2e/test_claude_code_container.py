"""The claude-code engine in a worker container hardened as the cluster's (read-only root,
tmpfs /tmp, every capability dropped but SETUID/SETGID for the switch, no-new-privileges,
the key as a root-only secret file): Claude Code's Bash tries every way to the key it has
(its environment, the worker's /proc, /run/secrets) and finds none.

The image is ``Dockerfile.claude-code`` on crewbox's image, built when missing (minutes, the
first time); the worktree's code is mounted over it, so the test runs the current code. The
scripted endpoint (the LLM, the only fake) listens on the host's loopback; the container
shares the host's network to reach it. About 5 s once the image exists.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakes.messages_server import FakeLLMServer
from tests.integration.conftest import docker_answers
from tests.integration.test_claude_code_engine import (
    KEY,
    ScriptedModel,
    persona_dir,
    text,
    tool,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

BASE_IMAGE = "crewbox-engine-test:local"
IMAGE = "crewbox-engine-test:claude-code"


def docker(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def ensure_image() -> None:
    """Build the claude-code image unless it exists (crewbox's image first)."""
    if docker("image", "inspect", IMAGE).returncode == 0:
        return
    for args in (
        ["build", "-q", "-t", BASE_IMAGE, "."],
        ["build", "-q", "-f", "Dockerfile.claude-code", "--build-arg", f"BASE={BASE_IMAGE}",
         "-t", IMAGE, "."],
    ):  # fmt: skip
        done = subprocess.run(
            ["docker", *args], cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_bash_in_the_hardened_container_finds_no_key(tmp_path: Path) -> None:
    if not docker_answers():
        pytest.skip("needs a Docker engine (.ci/run starts one)")
    ensure_image()
    prompts = persona_dir(tmp_path)
    secret = tmp_path / "anthropic_key"
    secret.write_text(KEY + "\n")
    secret.chmod(0o400)  # root's, as compose secrets are
    probe = (
        "id; env; tr '\\0' '\\n' < /proc/1/environ; tr '\\0' ' ' < /proc/1/cmdline; "
        "cat /proc/1/mem 2>&1 | head -c 100; cat /run/secrets/* 2>&1; ls -l /run/secrets"
    )
    brain = ScriptedModel(
        steps=[([tool("Bash", 1, command=probe)], "tool_use"), ([text("Looked.")], "end_turn")]
    )
    with FakeLLMServer(brain) as server:
        env = {
            "CREWBOX_PROVIDER": "anthropic",
            "CREWBOX_ANTHROPIC_API_KEY_FILE": "/run/secrets/anthropic_key",
            "CREWBOX_ANTHROPIC_BASE_URL": server.url,
            "CREWBOX_MODEL": "claude-sonnet-4-6",
            "CREWBOX_PROMPTS_DIR": "/prompts",
            "CREWBOX_WORK_DIR": "/tmp/work",
            "CREWBOX_RUN_AS": "10001:10001",
            "CREWBOX_ALLOW_BASH": "true",
            "CREWBOX_LLM_MAX_RETRIES": "0",
            "PYTHONPATH": "/src",
        }
        args = ["run", "--rm", "--network", "host", "--user", "0", "--read-only",
                "--tmpfs", "/tmp:mode=1777", "--cap-drop", "ALL", "--cap-add", "SETUID",
                "--cap-add", "SETGID", "--security-opt", "no-new-privileges",
                "-v", f"{secret}:/run/secrets/anthropic_key:ro",
                "-v", f"{prompts}:/prompts:ro",
                "-v", f"{ROOT / 'crewbox'}:/src/crewbox:ro",
                "-v", f"{ROOT / 'worker'}:/src/worker:ro",
                "-v", f"{ROOT / 'tests'}:/src/tests:ro"]  # fmt: skip
        for name, value in env.items():
            args += ["-e", f"{name}={value}"]
        done = docker(*args, IMAGE, "python", "-m", "tests.e2e.claude_code_driver", timeout_s=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["uid"] == 10001 and report["pid"] == 1
    result = report["result"]
    assert result["status"] == "succeeded", result["error"]
    seen = json.dumps(server.bodies())
    assert "uid=10001" in seen and "CLAUDE_CONFIG_DIR" in seen  # the probe ran as 10001
    assert "Permission denied" in seen  # /proc/1 and /run/secrets refused it
    assert KEY not in seen
    assert result["usage"]["input_tokens"] == brain.ledger["input_tokens"]
    assert result["usage"]["output_tokens"] == brain.ledger["output_tokens"]
