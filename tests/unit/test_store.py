"""Artifacts carried in a result are written only when their sha256 matches."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from crewbox.errors import ArtifactError
from crewbox.models import Artifact, Result
from crewbox.store import RunStore, list_artifacts, sha256_hex


def carried(path: str, data: bytes, sha: str | None = None) -> Artifact:
    return Artifact(
        path=path,
        bytes=len(data),
        sha256=sha or sha256_hex(data),
        content_b64=base64.b64encode(data).decode(),
    )


def result(*artifacts: Artifact) -> Result:
    return Result(
        run_id="r", task_id="t", persona="marie", status="succeeded", artifacts=list(artifacts)
    )


def test_carried_artifacts_are_written_and_stripped_from_result_json(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "r")
    store.write_result(result(carried("a/b.md", b"hello")))
    folder = store.task_dir("marie", "t")
    assert (folder / "a" / "b.md").read_bytes() == b"hello"
    on_disk = Result.model_validate_json((folder / "result.json").read_text())
    assert on_disk.artifacts[0].content_b64 is None
    assert on_disk.artifacts[0].sha256 == sha256_hex(b"hello")


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        RunStore(tmp_path, "r").write_result(result(carried("x.md", b"data", sha="0" * 64)))


def test_carried_path_cannot_leave_the_task_folder(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="refused: not a normalized relative path"):
        RunStore(tmp_path, "r").write_result(result(carried("../../evil.md", b"x")))
    assert not (tmp_path / "r" / "evil.md").exists()


def test_list_artifacts_enforces_the_carry_limit(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 2000)
    assert list_artifacts(tmp_path)[0].bytes == 2000
    with pytest.raises(ArtifactError, match="CREWBOX_MAX_ARTIFACT_BYTES"):
        list_artifacts(tmp_path, carry=True, max_bytes=1000)
