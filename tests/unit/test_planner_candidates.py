"""A catalog the planner can afford: above CREWBOX_PLANNER_CANDIDATES personas, the planner
sees only the best matches for the request (BM25), and says which were offered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crewbox.llm.base import LLMResponse, ToolDef
from crewbox.models import Plan, Request
from crewbox.personas import Persona, load_personas, load_role_prompt
from crewbox.testing import ScriptedLLM
from orchestrator.plan import Planner, candidate_personas, cut_plan
from tests.conftest import ROOT, spec
from tests.personas_fixture import write_personas

REQUEST = "Tune the slow postgres queries behind our payments search"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Persona]:
    folder = tmp_path_factory.mktemp("prompts")
    write_personas(folder, 200)
    return dict(load_personas(folder))


class SchemaSpy(ScriptedLLM):
    """A ScriptedLLM that keeps the tools each call was offered."""

    offered_tools: list[ToolDef]

    def complete(self, *args: Any, **kw: Any) -> LLMResponse:
        self.offered_tools = kw["tools"]
        return super().complete(*args, **kw)


def planner(personas: dict[str, Persona], llm: ScriptedLLM, candidates: int) -> Planner:
    prompt = load_role_prompt(ROOT / "prompts", "orchestrator")
    return Planner(llm, prompt, personas, model="claude-sonnet-4-6", candidates=candidates)


def submit(*tasks: dict[str, Any]) -> dict[str, Any]:
    use = {"name": "submit_plan", "input": {"tasks": list(tasks)}}
    return {"match": "Call submit_plan", "tool_uses": [use]}


def test_the_planner_is_offered_the_best_matching_personas_and_says_so(
    catalog: dict[str, Persona],
) -> None:
    llm = SchemaSpy([submit(spec("q", "postgres-optimizer"), spec("p", "python-expert"))])
    offers: list[list[str]] = []
    plan = planner(catalog, llm, 24).plan(
        Request(text=REQUEST), lambda _u: None, on_offer=offers.append
    )
    (offered,) = offers
    assert len(offered) == 24 and "postgres-optimizer" in offered
    assert {n.split("-")[0] for n in offered[:5]} <= {"postgres", "payments", "search"}
    (call,) = llm.calls
    listed = [line for line in call.text.split("\\n") if line.startswith("- ")]
    assert len(listed) == 24  # the catalog the planner reads: the offered ones only
    (tool,) = llm.offered_tools
    enum = tool.input_schema["$defs"]["TaskSpec"]["properties"]["persona"]["enum"]
    assert sorted(enum) == sorted(offered)
    assert [t.persona for t in plan.tasks] == ["postgres-optimizer", "python-expert"]


def test_a_catalog_within_the_limit_is_offered_whole_and_not_announced() -> None:
    personas = dict(load_personas(ROOT / "prompts"))
    llm = ScriptedLLM([submit(spec("a", "marie"))])
    offers: list[list[str]] = []
    planner(personas, llm, 24).plan(Request(text=REQUEST), lambda _u: None, on_offer=offers.append)
    assert offers == []
    assert all(f"- {name}:" in llm.calls[0].text for name in personas)


def test_a_request_of_stop_words_only_gets_the_first_personas_by_name(
    catalog: dict[str, Persona],
) -> None:
    assert candidate_personas("the of and", catalog, 3) == sorted(catalog)[:3]


def test_the_cap_is_shown_in_the_schema_and_the_message(catalog: dict[str, Persona]) -> None:
    llm = SchemaSpy([submit(spec("a", "python-expert"))])
    made = planner(catalog, llm, 24)
    made.plan(Request(text=REQUEST), lambda _u: None)
    assert made.cap == 20  # min(CREWBOX_MAX_PLANNED_TASKS 24, 4096 output tokens / 200)
    assert llm.offered_tools[0].input_schema["properties"]["tasks"]["maxItems"] == 20
    assert "Plan at most 20 tasks" in llm.calls[0].text


def test_a_cut_plan_keeps_its_dependencies_consistent() -> None:
    plan = Plan.model_validate(
        {"tasks": [spec("a", "m"), spec("b", "m", ["c"]), spec("c", "m"), spec("d", "m", ["a"])]}
    )
    cut, (why,) = cut_plan(plan, 2)
    assert [t.id for t in cut.tasks] == ["a", "c"]
    assert why.endswith("cut b, d")


def test_personas_fixture_loads_200_and_refuses_each_bad_file_once(tmp_path: Path) -> None:
    names = write_personas(tmp_path, 200, invalid=3)
    loaded = load_personas(tmp_path)
    assert sorted(loaded) == sorted(names)
    assert len(loaded.invalid) == 3


def test_personas_the_request_names_are_always_offered(catalog: dict[str, Persona]) -> None:
    text = "Ask @android-writer and ios-debugger to tune the postgres search"
    offered = candidate_personas(text, catalog, 5)
    assert sorted(offered[:2]) == ["android-writer", "ios-debugger"]
    assert all(n.startswith(("postgres", "search")) for n in offered[2:])
