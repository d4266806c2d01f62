"""The planner: request → Plan with the LLM, validated, repaired, or a clear PlanError.

The plan comes from a forced call of the ``submit_plan`` tool, whose input schema is the
Plan contract of ARCHITECTURE.md with ``persona`` as an enum of persona names (with an
OpenAI-compatible server the client turns that into ``response_format`` json_schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crewbox.errors import PlanError
from crewbox.llm.base import (
    LLMClient,
    LLMResponse,
    Message,
    SystemBlock,
    TextBlock,
    ToolDef,
    ToolResultBlock,
)
from crewbox.models import MAX_TASKS, Plan, Request, Usage
from crewbox.personas import Persona

PLAN_TOOL = "submit_plan"

PLAN_FILE_EXTRA_KEYS = ("request", "description", "name")
"""Keys a ``--plan`` / workflow file may carry besides ``tasks``."""


def plan_schema(persona_names: Iterable[str]) -> dict[str, Any]:
    """The JSON Schema of a Plan with ``persona`` restricted to ``persona_names``."""
    schema = Plan.model_json_schema()
    spec = schema["$defs"]["TaskSpec"]
    spec["properties"]["persona"]["enum"] = sorted(persona_names)
    spec["required"] = [
        "id",
        "persona",
        "title",
        "instructions",
        "depends_on",
        "priority",
        "timeout_s",
    ]
    return schema


def plan_tool(persona_names: Iterable[str]) -> ToolDef:
    """The ``submit_plan`` tool the planner is forced to call."""
    return ToolDef(
        name=PLAN_TOOL,
        description="Submit the plan: the tasks to run, each for one persona.",
        input_schema=plan_schema(persona_names),
    )


def pydantic_problems(exc: ValidationError) -> list[str]:
    """One short sentence per validation error, located like ``tasks[1].persona``."""
    problems = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        problems.append(f"{loc or 'plan'}: {err['msg']}")
    return problems


def find_cycle(plan: Plan) -> list[str] | None:
    """A dependency cycle as a list of task ids (first id repeated last), or None."""
    deps = {t.id: [d for d in t.depends_on if d != t.id] for t in plan.tasks}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep] if dep in path else [node, dep]
            if dep in deps and dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for task_id in deps:
        if task_id not in state and (cycle := visit(task_id, [task_id])):
            return cycle
    return None


def validate_plan(plan: Plan, persona_names: Iterable[str]) -> list[str]:
    """Every problem of a structurally valid plan; an empty list when it can be dispatched.

    Checks: personas exist, ids unique, dependencies known, not on itself, acyclic.
    """
    known = set(persona_names)
    problems: list[str] = []
    ids = [t.id for t in plan.tasks]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"task id {dup!r} is used more than once")
    for task in plan.tasks:
        if task.persona not in known:
            problems.append(
                f"task {task.id!r} names unknown persona {task.persona!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        for dep in task.depends_on:
            if dep == task.id:
                problems.append(f"task {task.id!r} depends on itself")
            elif dep not in ids:
                problems.append(f"task {task.id!r} depends on unknown task {dep!r}")
    cycle = find_cycle(plan)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


def parse_plan(data: Any, persona_names: Iterable[str]) -> tuple[Plan | None, list[str]]:
    """Validate raw plan data (a dict): the Plan, or None and the problems found."""
    if not isinstance(data, Mapping):
        return None, ["a plan must be an object with a 'tasks' list"]
    fields = {k: v for k, v in data.items() if k not in PLAN_FILE_EXTRA_KEYS}
    try:
        plan = Plan.model_validate(fields)
    except ValidationError as exc:
        return None, pydantic_problems(exc)
    problems = validate_plan(plan, persona_names)
    return (None, problems) if problems else (plan, [])


def load_plan_file(path: Path, persona_names: Iterable[str]) -> tuple[Plan, str | None]:
    """Read a ``--plan`` file (JSON or YAML): the Plan and its optional ``request`` text.

    Raises:
        PlanError: unreadable file, bad JSON/YAML, or an invalid plan (all problems, one line).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read plan file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise PlanError(f"plan file {path} is not valid JSON or YAML: {first}") from exc
    plan, problems = parse_plan(data, persona_names)
    if plan is None:
        raise PlanError(f"plan file {path} is invalid: " + "; ".join(problems), problems)
    request = data.get("request") if isinstance(data.get("request"), str) else None
    return plan, request


def catalog_text(personas: Mapping[str, Persona]) -> str:
    """The persona catalog the planner sees: ``- name: description`` lines."""
    return "\n".join(f"- {p.name}: {p.description}" for p in personas.values())


def planner_message(request: Request, personas: Mapping[str, Persona]) -> str:
    """The planner's user message: persona catalog, request, shared context."""
    parts = [
        f"## Personas\n\n{catalog_text(personas)}",
        f"## Request\n\n{request.text}",
        f"Plan at most {MAX_TASKS} tasks. Call {PLAN_TOOL} with the plan.",
    ]
    if request.context_files:
        parts.insert(2, f"## Shared context\n\n{request.shared_context()}")
    return "\n\n".join(parts)


class Planner:
    """Turns a Request into a valid Plan with the LLM (repairing up to ``repairs`` times)."""

    def __init__(
        self,
        llm: LLMClient,
        prompt: Persona,
        personas: Mapping[str, Persona],
        *,
        model: str,
        max_tokens: int = 4096,
        repairs: int = 2,
    ) -> None:
        self.llm = llm
        self.prompt = prompt
        self.personas = personas
        self.model = model
        self.max_tokens = max_tokens
        self.repairs = repairs

    def plan(self, request: Request, on_call: Callable[[Usage], None]) -> Plan:
        """A valid plan for ``request``; ``on_call`` receives each LLM call's usage.

        Raises:
            PlanError: still invalid after the repairs (nothing is dispatched).
            LLMAPIError: the provider failed.
        """
        messages = [Message(role="user", content=planner_message(request, self.personas))]
        problems: list[str] = []
        for _ in range(self.repairs + 1):
            response = self._call(messages)
            on_call(response.usage)
            plan, problems = parse_plan(plan_input(response), self.personas)
            if plan is not None:
                return plan
            messages += repair_messages(response, problems)
        raise PlanError(
            f"the planner produced no valid plan after {self.repairs + 1} tries: "
            + "; ".join(problems),
            problems,
        )

    def _call(self, messages: list[Message]) -> LLMResponse:
        return self.llm.complete(
            system=[SystemBlock(text=self.prompt.prompt, cache=True)],
            messages=messages,
            tools=[plan_tool(self.personas)],
            force_tool=PLAN_TOOL,
            max_tokens=self.max_tokens,
            model=self.model,
        )


def plan_input(response: LLMResponse) -> Any:
    """The ``submit_plan`` input of a response, else JSON found in its text, else None."""
    for use in response.tool_uses:
        if use.name == PLAN_TOOL:
            return use.input
    text = response.text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def repair_messages(response: LLMResponse, problems: list[str]) -> list[Message]:
    """The assistant's answer and a user turn listing what to fix."""
    feedback = (
        "The plan is invalid: "
        + "; ".join(problems)
        + f". Call {PLAN_TOOL} again with a corrected plan."
    )
    uses = [u for u in response.tool_uses if u.name == PLAN_TOOL]
    answer = Message(
        role="assistant", content=list(response.content) or [TextBlock(text="(no answer)")]
    )
    if uses:
        reply = [ToolResultBlock(tool_use_id=u.id, content=feedback, is_error=True) for u in uses]
        return [answer, Message(role="user", content=list(reply))]
    return [answer, Message(role="user", content=feedback)]
