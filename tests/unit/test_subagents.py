"""Sub-agents: loading prompts/<persona>/agents/*.md, their tools and models, and the Task
tool run through the real TaskRunner with ScriptedLLM at the LLM edge."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from crewbox.config import Settings
from crewbox.llm.pricing import price_for
from crewbox.models import Event, LLMCall, Request, Result, Task, TaskSpec, Usage
from crewbox.personas import Persona, load_persona, load_personas
from crewbox.runlog.files import FileRunLog
from crewbox.subagents import (
    load_subagents,
    offered_subagents,
    offers_task,
    persona_models,
    subagent_model,
)
from crewbox.testing import RecordedCall, ScriptedLLM
from tests.conftest import ROOT
from worker.service import TaskRunner
from worker.subagents import sub_agents, subagent_tools, task_tool_definition
from worker.tools import select_tools

LEAD = """---
name: lead
description: The lead persona of these tests.
tools: Read, Write, Grep, Task
---
LEAD-PROMPT: you run tasks.
"""

CHECKER = """---
name: checker
description: Checks a draft.
tools: Read, Edit, Grep, Task
---
CHECKER-PROMPT: you check drafts.
"""

COUNTER = """---
name: counter
description: Counts dancers.
tools: Read, Grep
model: haiku
---
COUNTER-PROMPT: you count.
"""


def write_prompts(root: Path, agents: dict[str, str]) -> Path:
    """prompts/lead.md and prompts/lead/agents/<name>.md for each of ``agents``."""
    prompts = root / "prompts"
    (prompts / "lead" / "agents").mkdir(parents=True)
    (prompts / "lead.md").write_text(LEAD)
    for name, text in agents.items():
        (prompts / "lead" / "agents" / f"{name}.md").write_text(text)
    return prompts


def lead(tmp_path: Path, agents: dict[str, str] | None = None) -> Persona:
    prompts = write_prompts(tmp_path, {"checker": CHECKER, "counter": COUNTER, **(agents or {})})
    return load_personas(prompts)["lead"]


# -- loading ------------------------------------------------------------------------------
def test_sub_agents_load_from_the_persona_folder_and_a_broken_file_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = "---\ndescription: no name here\n---\nbody\n"
    twice = COUNTER.replace("Counts dancers.", "Counts again.")
    persona = lead(tmp_path, {"broken": broken, "zz-twice": twice})
    with caplog.at_level(logging.WARNING, logger="crewbox.personas"):
        subagents = load_subagents(persona)
    assert list(subagents) == ["checker", "counter"]
    assert subagents["counter"].description == "Counts dancers."
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "broken.md" in warnings[0] and "no 'name'" in warnings[0]
    assert "zz-twice.md" in warnings[1] and "used twice" in warnings[1]


def test_a_persona_without_an_agents_folder_or_a_file_has_no_sub_agents(tmp_path: Path) -> None:
    (tmp_path / "solo.md").write_text(LEAD.replace("name: lead", "name: solo"))
    assert load_subagents(load_persona(tmp_path / "solo.md")) == {}
    assert load_subagents(Persona(name="x", description="d", prompt="p")) == {}


@pytest.mark.parametrize(
    ("old", "new"),
    [("tools: Read, Write, Grep, Task", "tools: Read, Write, Grep"),
     ("tools: Read, Write, Grep, Task", "disallowedTools: Task")],
)  # fmt: skip
def test_a_persona_whose_tools_do_not_allow_task_offers_no_sub_agents(
    tmp_path: Path, old: str, new: str
) -> None:
    persona = lead(tmp_path)
    assert list(offered_subagents(persona)) == ["checker", "counter"]
    assert persona.path is not None
    persona.path.write_text(LEAD.replace(old, new))
    without = load_personas(persona.path.parent)["lead"]
    assert not offers_task(without) and offered_subagents(without) == {}
    runner = TaskRunner(settings_for(tmp_path), without, ScriptedLLM([]))
    assert runner.subagents == {}


def test_sub_agent_files_are_not_personas(tmp_path: Path) -> None:
    assert list(load_personas(lead(tmp_path).path.parent)) == ["lead"]  # type: ignore[union-attr]


def test_marie_ships_the_choreography_analyzer_on_haiku_with_read_and_grep() -> None:
    marie = load_personas(ROOT / "prompts")["marie"]
    analyzer = load_subagents(marie)["choreography-analyzer"]
    assert analyzer.tools == ["Read", "Grep"]
    model = subagent_model(analyzer, marie.model_or("claude-sonnet-4-6"))
    assert model == "claude-haiku-5-5" and price_for(model) is not None
    assert persona_models(marie, "claude-sonnet-4-6") == {"claude-sonnet-4-6", model}


def test_a_sub_agent_model_inherits_and_aliases_stand_for_the_local_model_off_claude(
    tmp_path: Path,
) -> None:
    subagents = load_subagents(lead(tmp_path))
    assert subagent_model(subagents["checker"], "claude-opus-4-6") == "claude-opus-4-6"
    assert subagent_model(subagents["counter"], "claude-opus-4-6") == "claude-haiku-5-5"
    assert subagent_model(subagents["counter"], "smollm2", claude=False) == "smollm2"


def test_a_sub_agent_gets_only_tools_its_persona_has_and_never_task(tmp_path: Path) -> None:
    subagents = load_subagents(lead(tmp_path))
    parent = select_tools(["Read", "Write", "Grep", "Bash"], allow_bash=False)
    assert [t.name for t in subagent_tools(subagents["checker"], parent)] == ["Read", "Grep"]
    everything = Persona(name="all", description="d", prompt="p")  # no tools key: all of them
    assert [t.name for t in subagent_tools(everything, parent)] == ["Read", "Write", "Grep"]


def test_the_task_tool_lists_each_sub_agent_with_its_tools(tmp_path: Path) -> None:
    subagents = load_subagents(lead(tmp_path))
    parent = select_tools(["Read", "Write", "Grep"], allow_bash=False)
    tool = task_tool_definition(sub_agents(subagents, parent))
    assert tool.name == "Agent"
    assert "- checker: Checks a draft. (Tools: Read, Grep)" in tool.description
    assert "- counter: Counts dancers. (Tools: Read, Grep)" in tool.description
    assert tool.input_schema["required"] == ["description", "prompt", "subagent_type"]


# -- running through the TaskRunner --------------------------------------------------------
def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        provider="scripted",
        prompts_dir=tmp_path / "prompts",
        workspaces_dir=tmp_path / "workspaces",
        results_dir=tmp_path / "results",
        tasks_dir=tmp_path / "tasks",
        **kw,
    )


def make_task(run_id: str = "r1", **kw: Any) -> Task:
    spec = TaskSpec(id="t1", persona="lead", title="T1", instructions="Check the draft.")
    return Task(run_id=run_id, spec=spec, request_text="req", **kw)


def task_call(subagent: str, prompt: str) -> dict[str, Any]:
    return {
        "name": "Task",
        "input": {"description": "check it", "prompt": prompt, "subagent_type": subagent},
    }


def usage(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o}


class Ran:
    """One task run by a TaskRunner for persona lead over a ScriptedLLM."""

    def __init__(
        self,
        tmp_path: Path,
        steps: list[dict[str, Any]],
        run_log: FileRunLog | None = None,
        task: Task | None = None,
        **settings: Any,
    ) -> None:
        self.llm = ScriptedLLM(steps, record_dir=tmp_path / "record")
        self.events: list[Event] = []
        self.persona = lead(tmp_path)
        self.runner = TaskRunner(
            settings_for(tmp_path, **settings), self.persona, self.llm, "test:1", run_log
        )
        self.task = task or make_task()
        self.out_dir = self.runner.output_dir(self.task)

    def run(self) -> Result:
        result = self.runner(self.task, self.events.append)
        assert result is not None
        return result

    def calls(self, marker: str) -> list[RecordedCall]:
        return [c for c in self.llm.calls if marker in c.system[0]]

    def reported(self) -> list[LLMCall]:
        return [e.payload(LLMCall) for e in self.events if e.kind == "llm_call"]


def test_two_task_calls_overlap_a_sub_agent_cannot_use_a_tool_its_persona_lacks_usage_exact(
    tmp_path: Path,
) -> None:
    draft = "choreo.md"
    edit = {"file_path": draft, "old_string": "a", "new_string": "b"}
    steps = [
        {
            "match": "Task id: t1",
            "usage": usage(300, 40),
            "tool_uses": [task_call("checker", "CHECK-A the draft"), task_call("counter", "B")],
        },
        {"match": "Task id: t1", "usage": usage(500, 60), "text": "lead done"},
        {  # both sub-agents' first calls must be in flight together to pass the barrier
            "match": "CHECKER-PROMPT",
            "barrier": "subs",
            "parties": 2,
            "usage": usage(120, 15),
            "tool_uses": [{"name": "Edit", "input": edit}],
        },
        {"match": "tool 'Edit' is not available", "usage": usage(140, 25), "text": "2 problems"},
        {
            "match": "COUNTER-PROMPT",
            "barrier": "subs",
            "parties": 2,
            "usage": usage(90, 10),
            "text": "8 dancers",
        },
    ]
    ran = Ran(tmp_path, steps)
    ran.out_dir.mkdir(parents=True)
    (ran.out_dir / draft).write_text("a draft\n")

    result = ran.run()

    assert result.status == "succeeded", result.error
    ran.llm.assert_all_used()
    checker, counter = ran.calls("CHECKER-PROMPT"), ran.calls("COUNTER-PROMPT")
    first_checker, first_counter = checker[0], counter[0]
    assert max(first_checker.started_at_s, first_counter.started_at_s) < min(
        first_checker.ended_at_s, first_counter.ended_at_s
    )
    assert (ran.out_dir / draft).read_text() == "a draft\n"  # Edit was refused
    assert [c.tools for c in checker] == [["Read", "Grep"]] * 2  # no Edit, no Task
    assert counter[0].tools == ["Read", "Grep"] and counter[0].model == "claude-haiku-5-5"
    assert checker[0].model == "claude-sonnet-5-5"  # no model: the persona's
    lead_calls = ran.calls("LEAD-PROMPT")
    assert lead_calls[0].tools == ["Read", "Write", "Grep", "Agent"]
    results = lead_calls[1].messages[-1]["content"]
    assert [r["content"] for r in results] == ["2 problems", "8 dancers"]  # in call order
    # usage: every call once, summed exactly, each sub-agent's part under its name
    assert result.usage == Usage.total(c.usage for c in ran.llm.calls)
    assert result.usage.calls == 5 and result.usage.input_tokens == 300 + 500 + 120 + 140 + 90
    assert result.usage_by_subagent == {
        "checker": Usage.total(c.usage for c in checker),
        "counter": Usage.total(c.usage for c in counter),
    }
    reported = ran.reported()
    assert Usage.total(c.usage for c in reported) == result.usage
    assert sorted(str(c.subagent) for c in reported) == sorted(
        ["None", "None", "checker", "checker", "counter"]
    )


def test_unknown_sub_agent_max_turns_and_api_error_come_back_as_errors_the_model_sees(
    tmp_path: Path,
) -> None:
    read = {"name": "Read", "input": {"file_path": "missing.md"}}
    steps = [
        {
            "match": "Task id: t1",
            "tool_uses": [
                task_call("nobody", "X"),
                task_call("checker", "LOOPING"),
                task_call("counter", "FAILING"),
            ],
        },
        {"match": "no sub-agent 'nobody'; available: checker, counter", "text": "lead done"},
        {"match": "LOOPING", "tool_uses": [read]},
        {"match": "LOOPING", "tool_uses": [read]},
        {"match": "FAILING", "error": {"status": 400, "message": "bad request"}},
    ]
    ran = Ran(tmp_path, steps, max_turns=2)

    result = ran.run()

    assert result.status == "succeeded", result.error
    ran.llm.assert_all_used()
    unknown, looping, failing = ran.calls("LEAD-PROMPT")[1].messages[-1]["content"]
    assert unknown["is_error"] and "available: checker, counter" in unknown["content"]
    assert looping["is_error"] and failing["is_error"]
    assert "sub-agent checker did not finish: stopped after 2 turns" in looping["content"]
    assert "sub-agent counter failed: scripted HTTP 400" in failing["content"]
    assert result.usage == Usage.total(c.usage for c in ran.llm.calls)  # the 400 cost nothing
    assert set(result.usage_by_subagent) == {"checker"}


def owned_log(tmp_path: Path) -> FileRunLog:
    log = FileRunLog(tmp_path / "results")
    log.create(Request(run_id="r1", text="req"))
    assert log.acquire("r1", "test-owner", ttl_s=120)
    return log


def test_a_cancel_stops_the_sub_agents_at_their_next_turn_and_what_they_spent_counts(
    tmp_path: Path,
) -> None:
    read = {"name": "Read", "input": {"file_path": "x.md"}}
    slow = {"delay_s": 2.5, "tool_uses": [read]}
    steps = [
        {
            "match": "Task id: t1",
            "tool_uses": [task_call("checker", "A"), task_call("counter", "B")],
        },
        {"match": "CHECKER-PROMPT", **slow},
        {"match": "COUNTER-PROMPT", **slow},
        {"match": "CHECKER-PROMPT", "text": "never"},
        {"match": "COUNTER-PROMPT", "text": "never"},
        {"match": "Task id: t1", "text": "never"},
    ]
    log = owned_log(tmp_path)
    ran = Ran(tmp_path, steps, run_log=log)
    done: list[Result] = []
    worker = threading.Thread(target=lambda: done.append(ran.run()))
    worker.start()
    while not ran.reported():  # the persona's first call returned: the sub-agents start
        time.sleep(0.01)
    log.request_cancel("r1")
    worker.join(30)

    (result,) = done
    assert result.status == "cancelled", result.error
    assert ran.llm.unused_steps() == [3, 4, 5]
    assert result.usage == Usage.total(c.usage for c in ran.llm.calls)
    assert result.usage.calls == 3 and set(result.usage_by_subagent) == {"checker", "counter"}


def test_a_sub_agent_call_that_does_not_fit_the_budget_ends_the_task_budget_exceeded(
    tmp_path: Path,
) -> None:
    huge = "count every dancer " * 10_000  # about 60k tokens held: more than $0.05 allows
    steps = [
        {"match": "Task id: t1", "tool_uses": [task_call("checker", huge)]},
        {"match": "CHECKER-PROMPT", "text": "never"},
        {"match": "Task id: t1", "text": "never"},
    ]
    task = make_task(budget_usd="0.05")
    ran = Ran(tmp_path, steps, run_log=owned_log(tmp_path), task=task, max_tokens=100)

    result = ran.run()

    assert result.status == "budget_exceeded", result.error
    assert result.budget_scope == "run" and "sub-agent checker" in (result.error or "")
    assert ran.llm.unused_steps() == [1, 2]
    assert result.usage == Usage.total(c.usage for c in ran.llm.calls)


def test_agent_type_rules_restrict_which_sub_agents_are_offered(tmp_path: Path) -> None:
    from crewbox.subagents import offered_subagents

    prompts = tmp_path / "prompts"
    (prompts / "lead" / "agents").mkdir(parents=True)
    for name in ("checker", "counter"):
        (prompts / "lead" / "agents" / f"{name}.md").write_text(
            f"---\nname: {name}\ndescription: {name}\n---\nx"
        )
    (prompts / "lead.md").write_text(
        "---\nname: lead\ndescription: d\ntools: Read, Agent(counter)\n---\nx"
    )
    lead = load_personas(prompts)["lead"]
    assert list(offered_subagents(lead)) == ["counter"]
    (prompts / "lead.md").write_text("---\nname: lead\ndescription: d\ntools: Read, Task\n---\nx")
    assert list(offered_subagents(load_personas(prompts)["lead"])) == ["checker", "counter"]
