"""A small model's plan must come from the request (issue 17.9): the planner's prompt holds
no example to copy, a plan copied from it or holding placeholders is refused, and after the
repairs the request goes as it was asked to the personas that match it best."""

from __future__ import annotations

from typing import Any

import pytest

from crewbox.models import Event, Plan, Request, TaskSpec
from crewbox.personas import load_personas, load_role_prompt
from crewbox.testing import ScriptedLLM
from orchestrator.plan import Planner, best_personas, content_problems
from tests.conftest import ROOT
from tests.unit.test_orchestrator import cluster_of, settings  # noqa: F401 (fixtures)

REQUEST = "Write an Instagram campaign and a newsletter for our yoga studio's opening week"

COPIED = {
    "tasks": [
        {"id": f"kids-choreography-{i}", "persona": "marie",
         "title": "Choreograph the kids' recital piece", "instructions": "Write [insert task here]",
         "depends_on": [], "priority": "high", "timeout_s": 600}
        for i in (1, 2)
    ]
}  # fmt: skip
"""What SmolLM2 answered to every request with the old prompt's worked example."""


def task(title: str = "Opening week posts", instructions: str = "Write five posts.") -> TaskSpec:
    return TaskSpec(id="t", persona="fabien", title=title, instructions=instructions)


def test_the_planner_prompt_has_no_example_to_copy() -> None:
    prompt = load_role_prompt(ROOT / "prompts", "orchestrator").prompt
    assert "```" not in prompt
    for example in ("Choreograph", "kids-choreography", "ticket-page", "Write ..."):
        assert example not in prompt


@pytest.mark.parametrize(
    "instructions",
    ["Write [insert task here]", "Write ...", "TODO", "Describe <task description> here",
     "Write [TASK]", "lorem ipsum dolor"],
)  # fmt: skip
def test_placeholders_are_refused(instructions: str) -> None:
    (problem,) = content_problems(Plan(tasks=[task(instructions=instructions)]), "prompt")
    assert problem.startswith("task 't': its instructions holds the placeholder")


@pytest.mark.parametrize(
    "instructions",
    ["Write tickets.html with <h1>Tickets</h1> and a <a href=\"#buy\">buy</a> link.",
     "Use the list [a, b, c] of classes.", "Write five posts... then stop."],
)  # fmt: skip
def test_real_instructions_pass(instructions: str) -> None:
    assert content_problems(Plan(tasks=[task(instructions=instructions)]), "prompt") == []


def test_text_copied_from_the_prompt_is_refused() -> None:
    prompt = "## How to plan\nMake 1 to 8 tasks.   Use as few as\nthe request needs."
    plan = Plan(tasks=[task(title="Make 1 to 8 tasks. Use as few as the request needs.")])
    (problem,) = content_problems(plan, prompt)
    assert "its title is copied from the planner's instructions" in problem


def test_the_best_matching_personas_by_description() -> None:
    personas = load_personas(ROOT / "prompts")
    assert best_personas(REQUEST, personas) == (["fabien"], True)
    assert best_personas("Fix the bug in the ticket script and add a test", personas)[0] == ["anga"]
    assert best_personas("zzz qqq", personas) == (["anga"], False)


def test_copied_plans_fall_back_to_the_request_as_asked() -> None:
    personas = load_personas(ROOT / "prompts")
    answer = {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": COPIED}]}
    llm = ScriptedLLM([answer] * 3)
    planner = Planner(
        llm, load_role_prompt(ROOT / "prompts", "orchestrator"), personas, model="m", repairs=2
    )
    adjusted: list[list[str]] = []
    plan = planner.plan(Request(text=REQUEST), lambda usage: None, adjusted.append)
    assert [(t.id, t.persona) for t in plan.tasks] == [("request-fabien", "fabien")]
    assert "[insert" not in plan.tasks[0].instructions
    (change,) = adjusted[0]
    assert "not written for the request" in change and "fabien whose description" in change
    assert "holds the placeholder '[insert task here]'" in llm.calls[1].text


def test_the_run_says_its_plan_is_a_fallback(cluster_of: Any) -> None:  # noqa: F811
    answer = {"match": "Call submit_plan", "tool_uses": [{"name": "submit_plan", "input": COPIED}]}
    cluster = cluster_of(
        [answer] * 3
        + [
            {"match": "Task id: request-fabien", "text": "campaign and newsletter"},
            {"match": "## Results", "text": "answer"},
        ]
    )
    summary = cluster.orchestrator.run(Request(text=REQUEST))
    assert summary.status == "succeeded"
    events: list[Event] = cluster.events
    adjusted = next(e for e in events if e.kind == "plan_adjusted")
    assert "goes as it was asked to fabien" in adjusted.message
    assert [t.persona for t in summary.tasks] == ["fabien"]
