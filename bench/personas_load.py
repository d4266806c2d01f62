"""``python -m bench.personas_load``: how long loading a collection of 200 persona files takes
(tests/collection.py writes it, shaped like the public Claude Code subagent collections).

Prints, in seconds (median of ``--repeat`` runs): ``load_personas`` (crewbox's loader, in
this process), the cluster generator's reader (``crewbox.cluster.read_personas``, what
``make up`` runs) and the whole ``crewbox personas`` command (a new process: imports
included). The goal is under 2 s for the command; this prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from crewbox.cluster import read_personas
from crewbox.personas import load_personas
from tests.collection import write_collection
from tests.conftest import crewbox_env, run_crewbox


def median_s(step: Callable[[], object], repeat: int) -> float:
    """The median wall-clock seconds of ``repeat`` calls of ``step``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def command(folder: Path) -> None:
    """Run ``crewbox personas`` on ``folder``'s prompts/.

    Raises:
        RuntimeError: the command failed (its stderr in the message).
    """
    env = crewbox_env(folder, CREWBOX_PROMPTS_DIR=str(folder / "prompts"))
    done = run_crewbox(["personas"], env, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())


def main(argv: list[str] | None = None) -> int:
    """Write the collection to a temporary folder, time the three readers, print a table."""
    parser = argparse.ArgumentParser(prog="python -m bench.personas_load", description=__doc__)
    parser.add_argument("--files", type=int, default=200, help="persona files (200)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        expected = write_collection(folder / "prompts", args.files)
        prompts = folder / "prompts"
        rows = [
            ("load_personas_s", median_s(lambda: load_personas(prompts, False), args.repeat)),
            ("cluster_read_s", median_s(lambda: read_personas(prompts, folder), args.repeat)),
            ("crewbox_personas_s", median_s(lambda: command(folder), args.repeat)),
        ]
    print(f"{args.files} files: {len(expected.valid)} personas, {len(expected.refused)} refused")
    print(f"| figure | seconds (median of {args.repeat}) |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
