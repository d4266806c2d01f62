"""A request larger than the model can take is refused before any call (issue 17.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crewbox.config import CLAUDE_CONTEXT_TOKENS, Settings
from crewbox.errors import UserError
from crewbox.limits import check_request_size
from crewbox.llm.catalog import capabilities
from crewbox.models import ContextFile, Plan, Request, TaskSpec
from tests.conftest import crewbox_env, run_crewbox, spec
from tests.unit.test_orchestrator import cluster_of, settings  # noqa: F401 (fixtures)


def test_the_limit_comes_from_the_model_context_window() -> None:
    claude = Settings(provider="anthropic", max_tokens=4096, model="claude-sonnet-4-5")
    assert claude.context_window_tokens() == capabilities("claude-sonnet-4-5").context_tokens
    assert claude.request_tokens_limit() == (claude.context_window_tokens() - 4096) // 2
    assert Settings(provider="scripted").context_window_tokens() == CLAUDE_CONTEXT_TOKENS
    local = Settings(provider="openai", llm_context_tokens=4096, llm_max_tokens=768)
    assert local.request_tokens_limit() == (4096 - 768) // 2
    assert Settings(provider="openai", context_tokens=8192).context_window_tokens() == 8192


def test_a_context_file_too_large_names_its_size_and_the_limit() -> None:
    local = Settings(provider="openai", llm_context_tokens=4096, llm_max_tokens=768)
    big = Request(text="req", context_files=[ContextFile(name="big.txt", content="x" * 20_000)])
    with pytest.raises(UserError) as caught:
        check_request_size(big, local, "smollm2")
    message = str(caught.value)
    assert "too large for smollm2: 20,0" in message and "context file big.txt" in message
    assert f"at most {1664 * 4:,} fit" in message and "4,096-token context window" in message
    check_request_size(Request(text="req", context_files=[]), local)  # a small one passes


def test_plan_instructions_count_too() -> None:
    local = Settings(provider="openai", llm_context_tokens=4096, llm_max_tokens=768)
    long = TaskSpec(id="a", persona="marie", title="A", instructions="y" * 10_000)
    with pytest.raises(UserError, match="the instructions of task a alone is 10,000"):
        check_request_size(Request(text="req", plan=Plan(tasks=[long])), local)


def test_crewbox_run_refuses_a_huge_context_file_before_any_call(tmp_path: Path) -> None:
    context = tmp_path / "huge.txt"
    context.write_text("word " * 200_000)  # 1 MB: more than Claude's window
    env = crewbox_env(
        tmp_path, CREWBOX_PROVIDER="scripted", CREWBOX_SCRIPT_PATH=str(tmp_path / "none.yaml")
    )
    proc = run_crewbox(["run", "--context-file", str(context), "Summarize it"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("crewbox: error: the request is too large for ") and "huge.txt" in line
    assert "1,000,0" in line and f"{CLAUDE_CONTEXT_TOKENS:,}-token" in line
    assert not (tmp_path / "results").exists()


def test_the_orchestrator_refuses_it_too_before_any_call(cluster_of: Any) -> None:  # noqa: F811
    cluster = cluster_of([])
    plan = Plan(tasks=[TaskSpec(**spec("a", "marie"))])
    huge = Request(text="z" * 1_000_000, plan=plan)
    with pytest.raises(UserError, match="too large"):
        cluster.orchestrator.run(huge)
    assert "run_failed" in cluster.kinds() and "task_dispatched" not in cluster.kinds()
