"""The Makefile as a user meets it: `make help`'s table, what `make logs-<persona>` runs."""

from __future__ import annotations

import re
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
