"""The Makefile as a user meets it: `make help`'s table, what `make logs-<persona>` runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make -s ARGS` in the repository (dry runs only: nothing is started)."""
    return subprocess.run(
        ["make", "-s", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_descriptions_start_in_one_column() -> None:
    proc = make("help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.strip().startswith("workflow-spring-recital") for line in lines)
    columns = {m.start(2) for line in lines if (m := re.match(r"  (\S+)\s+(\S)", line))}
    assert len(columns) == 1, lines


def test_logs_into_a_pipe_carry_no_terminal_codes(tmp_path: Path) -> None:
    # what Compose 2.26 writes into a pipe: ESC[2K before every line, whatever the flags
    fake = tmp_path / "compose"
    fake.write_text("#!/bin/sh\nprintf '\\033[2Kmarie-1  | \\033[33mhello\\033[0m\\n'\n")
    fake.chmod(0o755)
    proc = make("logs-marie", f"COMPOSE={fake}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "marie-1  | hello\n"
    everything = make("logs", f"COMPOSE={fake}")
    assert everything.stdout == "marie-1  | hello\n"


def fake_compose(tmp_path: Path) -> tuple[Path, Path]:
    """A `docker compose` stand-in that records its arguments, one call a line."""
    calls, fake = tmp_path / "calls", tmp_path / "compose"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    return fake, calls


def project_copy(tmp_path: Path) -> Path:
    """What `make up` reads: the Makefile, scripts, crewbox (the generator), prompts."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("Makefile", "docker-compose.yml", "scripts", "crewbox", "prompts", "workspaces"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, copy / name)
    return copy


def test_make_up_personas_starts_only_those_and_refuses_unknown_names(tmp_path: Path) -> None:
    fake, calls = fake_compose(tmp_path)
    copy = project_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": "sk-unused", "HOME": str(tmp_path)}

    def up(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["make", "-s", "--no-print-directory", "up", f"COMPOSE={fake}", *args]
        return subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)

    refused = up("PERSONAS=marie bob")
    assert refused.returncode != 0 and not calls.exists()
    assert "crewbox: error: no persona 'bob' in prompts/" in refused.stderr
    assert up("PERSONAS=marie anga").returncode == 0
    started = calls.read_text().splitlines()[-1]
    assert started.endswith("up -d --wait --remove-orphans redis egress orchestrator marie anga")
    assert up().returncode == 0
    assert calls.read_text().splitlines()[-1].endswith("up -d --wait --remove-orphans")
