"""The Makefile as a user meets it: `make help`'s table, what `make logs-<persona>` runs."""

from __future__ import annotations

import re
import subprocess

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
