"""`crewbox personas` on a generated collection of 200 persona files shaped like the public
Claude Code subagent collections (tests/collection.py): the expected ones load, the rest are
refused once each with their reason, and the listing stays readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crewbox.cluster import read_personas
from tests.collection import Collection, write_collection
from tests.conftest import crewbox_env, run_crewbox


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Collection]:
    folder = tmp_path_factory.mktemp("collection")
    return folder, write_collection(folder / "prompts")


def personas(folder: Path, *args: str) -> tuple[str, str]:
    env = crewbox_env(folder, CREWBOX_PROMPTS_DIR=str(folder / "prompts"))
    proc = run_crewbox(["personas", *args], env, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def rows(stdout: str) -> dict[str, list[str]]:
    """The table rows by name: their cells."""
    lines = [line.replace("┃", "│") for line in stdout.splitlines()]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines]
    return {row[0]: row for row in cells if row and row[0]}


def test_the_expected_personas_load_and_the_rest_are_refused_with_a_reason(
    collection: tuple[Path, Collection],
) -> None:
    folder, expected = collection
    stdout, _ = personas(folder, "--json")
    listed = json.loads(stdout)
    assert [p["name"] for p in listed["personas"]] == expected.valid
    refused = {Path(bad["file"]).name: bad["reason"] for bad in listed["invalid"]}
    assert refused.keys() == expected.refused.keys()
    for filename, part in expected.refused.items():
        assert part in refused[filename], refused[filename]
    for filename, first in expected.duplicates.items():
        assert refused[filename].endswith(f"/{first})")  # it names both files
    none = [p["name"] for p in listed["personas"] if p["tools"] == []]
    assert none == expected.no_tools


def test_the_compact_listing_is_whole_and_says_each_refusal_once(
    collection: tuple[Path, Collection],
) -> None:
    folder, expected = collection
    stdout, stderr = personas(folder)
    table = rows(stdout)
    assert "…" not in stdout
    assert set(expected.valid) <= table.keys()  # every name whole, on one line
    assert table["name"] == ["name", "model", "tools", "warnings"]
    for name in expected.no_tools:
        assert table[name][2] == "none"
    for filename in expected.refused:
        assert stdout.count(filename) == 1
        assert filename not in stderr
    assert f"{len(expected.valid)} personas, {len(expected.refused)} files refused" in stdout


def test_the_long_listing_says_none_for_no_tools(collection: tuple[Path, Collection]) -> None:
    folder, expected = collection
    stdout, _ = personas(folder, "--long")
    table = rows(stdout)
    assert table["name"][:3] == ["name", "description", "tools"]
    assert table[expected.no_tools[0]][2] == "none"
    assert "warning x-backend-architect-000" in stdout  # each persona's warnings


def test_the_cluster_generator_starts_the_same_personas(
    collection: tuple[Path, Collection],
) -> None:
    folder, expected = collection
    found, warnings = read_personas(folder / "prompts", folder / "workspaces")
    assert [p.name for p in found] == expected.valid
    assert len(warnings) == len(expected.refused)
