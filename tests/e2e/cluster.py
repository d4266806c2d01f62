"""A copy of the project run as a compose cluster under its own project name, as a newcomer
runs it (`make up`, `make submit`, `make down`), so tests never touch a developer's own
cluster, secrets or results."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def project_name(base: str) -> str:
    """``base`` plus ``CREWBOX_TEST_PROJECT_SUFFIX`` when set, so test clusters of two
    checkouts on one Docker engine never share a compose project."""
    return base + os.environ.get("CREWBOX_TEST_PROJECT_SUFFIX", "")


COPIED = [
    "Makefile",
    "Dockerfile",
    "Dockerfile.claude-code",
    ".dockerignore",
    "docker-compose.yml",
    "redis-tls.yml",
    "worker-host-base.yml",
    "pyproject.toml",
    "README.md",
    "crewbox",
    "orchestrator",
    "worker",
    "prompts",
    "workflows",
    "workspaces",
    "scripts",
    "secrets/README.md",
]


def compose_answers() -> bool:
    """True when a Docker engine and Compose v2 answer."""
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    info = subprocess.run(["docker", "info"], capture_output=True, check=False)
    return probe.returncode == 0 and info.returncode == 0


def copy_project(target: Path) -> Path:
    """Copy what a user checks out into ``target`` (the local model hard-linked if fetched)."""
    for name in COPIED:
        src, dst = ROOT / name, target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    model = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (target / "models").mkdir(exist_ok=True)
    if model.exists():
        os.link(model, target / "models" / model.name)
    return target


class Cluster:
    """``make`` and ``docker compose`` in a copied project under compose project ``name``."""

    def __init__(self, folder: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.name = name
        self.extra_env = env or {}

    def env(self) -> dict[str, str]:
        """The user's environment without Anthropic keys or crewbox settings, plus ours."""
        env = {
            k: v
            for k, v in os.environ.items()
            if "ANTHROPIC" not in k
            and not k.startswith(
                (
                    "CREWBOX_PROVIDER",
                    "CREWBOX_MODEL",
                    "CREWBOX_RESULTS",
                    "CREWBOX_PROMPTS",
                    "MAKEFLAGS",
                )
            )
        }
        env["COMPOSE_PROJECT_NAME"] = self.name
        return {**env, **self.extra_env}

    def make(self, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        """Run `make ARGS` in the copied project."""
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def compose(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` for this project."""
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def docker(self, *args: str) -> str:
        """`docker ARGS`' standard output.

        Raises:
            RuntimeError: docker failed (its standard error in the message).
        """
        done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def containers(self) -> list[str]:
        """Ids of every container of this project, running or not."""
        out = subprocess.run(
            [
                "docker",
                "ps",
                "-a",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.name}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.split()


WORKER_PROCESS = (
    "import pathlib\n"
    "for p in sorted(pathlib.Path('/proc').glob('[0-9]*'), key=lambda p: int(p.name)):\n"
    "    cmd = (p / 'cmdline').read_bytes().split(b'\\0')\n"
    "    if b'worker' in cmd and b'--persona' in cmd and not cmd[0].endswith(b'docker-init'):\n"
    "        s = dict(l.split(':', 1) for l in (p / 'status').read_text().splitlines())\n"
    "        print(s['Uid'].split()[0], s['CapEff'].strip(), p.name, s['PPid'].strip())\n"
)
"""Prints uid, effective capabilities, pid and parent pid of each `crewbox worker` process of
the container (not of docker-init, PID 1, whose command line holds the worker's): the
supervisor, then the worker it forked."""


def assert_worker_boxed(lines: str) -> None:
    """The container's worker runs as 10001 with no capability; the only other `crewbox
    worker` process is its parent, the supervisor (root, which runs no tool)."""
    rows = [line.split() for line in lines.splitlines()]
    workers = [r for r in rows if r[0] == "10001"]
    assert [r[1] for r in workers] == ["0000000000000000"], lines
    supervisors = [r for r in rows if r[0] != "10001"]
    assert [(r[0], r[2]) for r in supervisors] == [("0", workers[0][3])], lines


WORKER_CAPS = ["DAC_READ_SEARCH", "SETGID", "SETUID"]
"""What a persona's worker container adds after dropping ALL: reading its root-only secret
files, then becoming uid 10001 (docker-compose.yml, ``x-worker``)."""


def assert_hardened(info: dict[str, Any]) -> None:
    """``info`` (one container of ``docker inspect``) is a persona's worker hardened as the
    cluster's: read-only root filesystem, ALL capabilities dropped but WORKER_CAPS,
    no-new-privileges, a pids limit, a memory limit, and the switch to uid 10001 asked for
    (``CREWBOX_RUN_AS``; that it happened: WORKER_PROCESS and assert_worker_boxed)."""
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"], host
    assert sorted(cap.removeprefix("CAP_") for cap in host["CapAdd"]) == WORKER_CAPS
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] and host["Memory"], host
    assert "CREWBOX_RUN_AS=10001:10001" in info["Config"]["Env"]
