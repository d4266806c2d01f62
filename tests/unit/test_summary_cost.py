"""summary.json's cost equals a hand computation for a run mixing Sonnet 5.5 cache reads,
Opus 5.5 and a Haiku 5.5 call over 100K prompt tokens (prices of crewbox/llm/pricing.json,
from platform.claude.com's pricing page)."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from crewbox.config import Settings
from crewbox.models import Plan, Request
from crewbox.testing import ScriptedLLM
from tests.conftest import ROOT, spec
from tests.unit.test_orchestrator import Cluster


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for variable in ("OPUS", "SONNET", "HAIKU"):
        monkeypatch.delenv(f"ANTHROPIC_DEFAULT_{variable}_MODEL", raising=False)
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    for name, model in (("anga", "opus"), ("fabien", "haiku")):
        path = prompts / f"{name}.md"
        path.write_text(path.read_text().replace("model: inherit", f"model: {model}"))
    return Settings(
        provider="scripted",
        model="claude-sonnet-5-5",
        prompts_dir=prompts,
        workspaces_dir=ROOT / "workspaces",
        tasks_dir=tmp_path / "tasks",
        results_dir=tmp_path / "results",
        task_retries=0,
    )


def test_summary_cost_equals_the_hand_computation(settings: Settings) -> None:
    steps = [
        {
            "match": "Task id: s\\n",
            "text": "s done",  # marie: claude-sonnet-5-5
            "usage": {"input_tokens": 1000, "cache_read_tokens": 20_000, "output_tokens": 500},
        },
        {
            "match": "Task id: o\\n",
            "text": "o done",  # anga: opus -> claude-opus-5-5
            "usage": {"input_tokens": 2000, "cache_write_tokens": 4000, "output_tokens": 1000},
        },
        {
            "match": "Task id: h\\n",
            "text": "h done",  # fabien: haiku -> claude-haiku-5-5
            "usage": {"input_tokens": 120_000, "output_tokens": 2000},
        },
        {
            "match": "## Results",
            "text": "answer",  # the synthesizer: claude-sonnet-5-5
            "usage": {"input_tokens": 3000, "output_tokens": 400},
        },
    ]
    cluster = Cluster(settings, ScriptedLLM(steps, model="claude-sonnet-5-5"))
    for thread in cluster.threads:
        thread.start()
    try:
        plan = Plan(tasks=[spec("s", "marie"), spec("o", "anga"), spec("h", "fabien")])
        summary = cluster.orchestrator.run(Request(text="req", plan=plan))
    finally:
        cluster.stop.set()
    assert [r.status for r in summary.tasks] == ["succeeded"] * 3

    # USD per MTok. Sonnet 5.5: $2 in, $10 out, $0.10 cache read (since 2026-10-07).
    sonnet = 1000 * 2 + 20_000 * Decimal("0.10") + 500 * 10  # 9,000 -> $0.009
    # Opus 5.5: $4 in, $20 out, $5 5-minute cache write.
    opus = 2000 * 4 + 1000 * 20 + 4000 * 5  # 48,000 -> $0.048
    # Haiku 5.5, prompt 120K > 100K: the whole request at 5x: $0.50 in, $2.50 out.
    haiku = 120_000 * Decimal("0.50") + 2000 * Decimal("2.50")  # 65,000 -> $0.065
    synthesis = 3000 * 2 + 400 * 10  # 10,000 -> $0.010
    expected = (sonnet + opus + haiku + synthesis) / 1_000_000
    assert expected == Decimal("0.132")

    written = json.loads(
        (settings.results_dir / summary.run_id / "summary.json").read_text(encoding="utf-8")
    )
    assert Decimal(str(written["usage_total"]["cost_usd"])) == expected
    assert Decimal(str(written["usage_total"]["cache_read_usd"])) == Decimal("0.002")
