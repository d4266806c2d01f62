"""The synthesizer's input stays within its token budget (orchestrator.synthesize)."""

from __future__ import annotations

from pathlib import Path

from crewbox.models import Artifact, Result
from orchestrator.synthesize import CHARS_PER_TOKEN, results_digest


def result(task_id: str, summary: str, artifact: str | None = None) -> Result:
    artifacts = [Artifact(path=artifact, bytes=1, sha256="0" * 64)] if artifact else []
    return Result(
        run_id="r", task_id=task_id, persona="marie", status="succeeded", summary=summary,
        artifacts=artifacts,
    )  # fmt: skip


def test_long_summaries_and_artifacts_are_cut_to_the_budget(tmp_path: Path) -> None:
    for t in ("a", "b", "c", "d"):
        (tmp_path / "marie" / t).mkdir(parents=True)
        (tmp_path / "marie" / t / "out.md").write_text("x" * 20_000)
    results = [result(t, "s" * 6_000, "out.md") for t in ("a", "b", "c", "d")]
    digest = results_digest(results, tmp_path, budget_tokens=1000)
    overhead = 400 * len(results)  # headers, fences, "[...]" marks
    assert len(digest) <= 1000 * CHARS_PER_TOKEN + overhead
    assert digest.count("[...]") == 8  # every summary and every excerpt was cut


def test_short_results_are_kept_whole(tmp_path: Path) -> None:
    digest = results_digest([result("a", "A short summary.")], tmp_path, budget_tokens=1000)
    assert "A short summary." in digest and "[...]" not in digest
