"""The planner: request → Plan with the LLM, validated, repaired, or a clear PlanError.

The plan comes from a call of the ``submit_plan`` tool, whose input schema is the Plan
contract of docs/architecture.md with ``persona`` as an enum of persona names: forced where
the model allows forced tool use; offered with ``tool_choice`` auto where it does not (the
Claude 5.5 generation, crewbox.llm.anthropic), the planner's message asking for the call
and a JSON answer in text read as well. With an OpenAI-compatible server the client turns
the tool into ``response_format`` json_schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
from crewbox.llm.catalog import chars_per_token
from crewbox.models import (
    MAX_INSTRUCTIONS_CHARS,
    Plan,
    Request,
    TaskSpec,
    Usage,
)
from crewbox.personas import Persona, Personas, unknown_persona

MAX_PLANNED_TASKS = 24
"""The default upper bound on tasks in a plan the LLM planner makes
(``CREWBOX_MAX_PLANNED_TASKS``): a bound on cost, and on what a person can review (plans
given by file may hold up to crewbox.models.MAX_TASKS)."""

TOKENS_PER_TASK = 200
"""Output tokens one planned task takes, about: the planner's cap is also at most its
output budget over this (PlanLimits.for_output)."""

PLANNER_CANDIDATES = 24
"""The default of CREWBOX_PLANNER_CANDIDATES: above this many personas, the planner is
offered only this many (:func:`candidate_personas`)."""

PLAN_TOOL = "submit_plan"

PLAN_FILE_EXTRA_KEYS = ("request", "description", "name")
"""Keys a ``--plan`` / workflow file may carry besides ``tasks``."""


ID_CHARS = 40
"""Id length the planner is asked for (the Plan contract allows 64); a pattern, not
maxLength, since llama.cpp's grammar ignores maxLength next to a pattern."""

TITLE_CHARS = 80
"""Title length the planner is asked for (the Plan contract allows 200)."""


@dataclass(frozen=True)
class PlanLimits:
    """Bounds written into the ``submit_plan`` schema so a whole plan fits ``max_tokens``.

    Grammar-constrained servers (llama.cpp) enforce them while generating; Claude reads them.
    """

    max_tasks: int = MAX_PLANNED_TASKS
    max_instructions_chars: int = MAX_INSTRUCTIONS_CHARS

    @classmethod
    def for_output(
        cls, max_tokens: int, max_tasks: int = MAX_PLANNED_TASKS, model: str = ""
    ) -> PlanLimits:
        """Limits for an answer of at most ``max_tokens`` (TOKENS_PER_TASK each) and
        at most ``max_tasks`` tasks (``CREWBOX_MAX_PLANNED_TASKS``), in characters of
        ``model``'s tokenizer (crewbox.llm.catalog.chars_per_token)."""
        budget_chars = int(max_tokens * chars_per_token(model))
        return cls(
            max_tasks=min(max_tasks, max(2, max_tokens // TOKENS_PER_TASK)),
            max_instructions_chars=max(200, min(MAX_INSTRUCTIONS_CHARS, budget_chars // 8)),
        )


def plan_schema(persona_names: Iterable[str], limits: PlanLimits | None = None) -> dict[str, Any]:
    """The JSON Schema of a Plan with ``persona`` restricted to ``persona_names``.

    Every field is required; ``limits`` tightens the task count and instructions length.
    """
    limits = limits or PlanLimits()
    schema = Plan.model_json_schema()
    schema["properties"]["tasks"]["maxItems"] = limits.max_tasks
    spec = schema["$defs"]["TaskSpec"]
    props = spec["properties"]
    props["persona"]["enum"] = sorted(persona_names)
    props["title"]["maxLength"] = TITLE_CHARS
    props["instructions"]["maxLength"] = limits.max_instructions_chars
    short_id = {"type": "string", "pattern": f"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{ID_CHARS - 1}}}$"}
    props["id"].update(short_id)
    props["depends_on"]["maxItems"] = limits.max_tasks - 1
    props["depends_on"]["items"] = short_id
    spec["required"] = list(props)
    return schema


def plan_tool(persona_names: Iterable[str], limits: PlanLimits | None = None) -> ToolDef:
    """The ``submit_plan`` tool the planner is forced to call."""
    return ToolDef(
        name=PLAN_TOOL,
        description="Submit the plan: the tasks to run, each for one persona.",
        input_schema=plan_schema(persona_names, limits),
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


def validate_plan(
    plan: Plan,
    persona_names: Iterable[str],
    max_tasks: int | None = None,
    prompt: str | None = None,
) -> list[str]:
    """Every problem of a structurally valid plan; an empty list when it can be dispatched.

    Checks: personas exist, ids unique, dependencies known, not on itself, acyclic; with
    ``prompt`` (the planner's instructions), no title or instructions copied from it or
    holding a placeholder (:func:`content_problems`). A persona whose file is invalid
    (``persona_names`` a :class:`~crewbox.personas.Personas`) is named with that file's
    reason.
    """
    if not isinstance(persona_names, Personas):
        persona_names = list(persona_names)
    known = set(persona_names)
    problems: list[str] = []
    if max_tasks is not None and len(plan.tasks) > max_tasks:
        problems.append(f"at most {max_tasks} tasks, not {len(plan.tasks)}")
    ids = [t.id for t in plan.tasks]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"task id {dup!r} is used more than once")
    for task in plan.tasks:
        if task.persona not in known:
            problems.append(f"task {task.id!r}: {unknown_persona(task.persona, persona_names)}")
        for dep in task.depends_on:
            if dep == task.id:
                problems.append(f"task {task.id!r} depends on itself")
            elif dep not in ids:
                problems.append(f"task {task.id!r} depends on unknown task {dep!r}")
    cycle = find_cycle(plan)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    if prompt is not None:
        problems += content_problems(plan, prompt)
    return problems


PLACEHOLDERS = re.compile(
    r"\[(?:insert|your|add|enter|fill|describe|placeholder|task|topic|name|date|title)\b"
    r"[^\]]{0,60}\]"  # [insert task here], [TASK], [your text]
    r"|<[A-Za-z][A-Za-z _-]*\s[A-Za-z _-]*>"  # <task description> (not HTML like <h1>)
    r"|\b(?:TODO|TBD|FIXME|XXX)\b|lorem ipsum"
    r"|^\W*\w+\W*(?:\.\.\.|…)\W*$",  # "Write ..."
    re.IGNORECASE,
)
"""Text that stands for content still to be written: a plan holding it was not written for
the request."""

COPIED_CHARS = 16
"""A title or instructions at least this long found word for word in the planner's prompt
was copied from it (an example), not written for the request."""


def content_problems(plan: Plan, prompt: str) -> list[str]:
    """One sentence per task whose title or instructions hold a placeholder
    (:data:`PLACEHOLDERS`) or were copied from ``prompt``, the planner's instructions
    (small local models copy its examples whatever the request)."""
    problems = []
    squeezed = " ".join(prompt.split()).lower()
    for task in plan.tasks:
        for field in ("title", "instructions"):
            text = getattr(task, field)
            found = PLACEHOLDERS.search(text)
            flat = " ".join(text.split()).lower()
            if found:
                problems.append(
                    f"task {task.id!r}: its {field} holds the placeholder {found.group(0)!r}; "
                    "write the real content for this request"
                )
            elif len(flat) >= COPIED_CHARS and flat in squeezed:
                problems.append(
                    f"task {task.id!r}: its {field} is copied from the planner's instructions; "
                    "write it for this request"
                )
    return problems


def parse_plan(
    data: Any,
    persona_names: Iterable[str],
    max_tasks: int | None = None,
    prompt: str | None = None,
) -> tuple[Plan | None, list[str]]:
    """Validate raw plan data (a dict): the Plan, or None and the problems found (at most
    ``max_tasks`` tasks when given: the LLM planner's cap; nothing copied from ``prompt``
    when given: see :func:`validate_plan`)."""
    if not isinstance(data, Mapping):
        return None, ["a plan must be an object with a 'tasks' list"]
    fields = {k: v for k, v in data.items() if k not in PLAN_FILE_EXTRA_KEYS}
    try:
        plan = Plan.model_validate(fields)
    except ValidationError as exc:
        return None, pydantic_problems(exc)
    problems = validate_plan(plan, persona_names, max_tasks, prompt)
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


def prune_references(plan: Plan) -> tuple[Plan, list[str]]:
    """Rename repeated ids (``x`` → ``x-2``) and drop dependencies on unknown tasks or self.

    Returns the new plan and one sentence per change. Cycles are left alone.
    """
    changes: list[str] = []
    seen: set[str] = set()
    tasks = []
    for task in plan.tasks:
        new_id, n = task.id, 2
        while new_id in seen:
            new_id, n = f"{task.id[:60]}-{n}", n + 1
        if new_id != task.id:
            changes.append(f"renamed repeated task id {task.id!r} to {new_id!r}")
        seen.add(new_id)
        tasks.append(task.model_copy(update={"id": new_id}))
    for i, task in enumerate(tasks):
        kept = [d for d in dict.fromkeys(task.depends_on) if d in seen and d != task.id]
        for dropped in [d for d in task.depends_on if d not in kept]:
            changes.append(f"dropped dependency of {task.id!r} on {dropped!r} (not another task)")
        tasks[i] = task.model_copy(update={"depends_on": kept})
    return Plan(tasks=tasks), changes


def structural_plan(data: Any) -> Plan | None:
    """``data`` as a Plan when its shape and fields are valid (references and content
    unchecked), else None."""
    if not isinstance(data, Mapping):
        return None
    try:
        return Plan.model_validate({k: v for k, v in data.items() if k not in PLAN_FILE_EXTRA_KEYS})
    except ValidationError:
        return None


def pruned_plan(
    data: Any,
    persona_names: Iterable[str],
    max_tasks: int | None = None,
    prompt: str | None = None,
) -> tuple[Plan, list[str]] | None:
    """The plan in ``data`` with its references pruned, if that makes it valid (within
    ``max_tasks``, nothing copied from ``prompt``, when given); else None."""
    plan = structural_plan(data)
    if plan is None:
        return None
    pruned, changes = prune_references(plan)
    problems = validate_plan(pruned, persona_names, max_tasks, prompt)
    return None if problems else (pruned, changes)


FALLBACK_PERSONAS = 3
"""At most this many personas get the request as it is in a fallback plan."""

STOPWORDS = frozenset({
    "about", "anything", "pick", "with", "that", "this", "from", "your", "their", "them",
    "have", "will", "what", "when", "which", "into", "also", "some", "more", "most",
    "other", "than", "then", "they", "only", "just", "like",
})  # fmt: skip
"""Words a request or a persona's description holds whatever its topic."""


def words(text: str) -> set[str]:
    """The words of ``text`` that can tell a topic: lowercase, 4 letters or more, a final
    ``s`` dropped, no stop words."""
    found = {w.removesuffix("s") for w in re.findall(r"[a-z]{4,}", text.lower())}
    return found - STOPWORDS


def best_personas(text: str, personas: Mapping[str, Persona]) -> tuple[list[str], bool]:
    """The personas whose descriptions share the most words with ``text`` (every one with
    at least half the best count, at most FALLBACK_PERSONAS), and whether any word matched
    at all (if not: the first persona alone)."""
    wanted = words(text)
    scores = {name: len(wanted & words(f"{name} {p.description}")) for name, p in personas.items()}
    best = max(scores.values(), default=0)
    if best == 0:
        return list(personas)[:1], False
    ranked = sorted((n for n in scores if 2 * scores[n] >= best), key=lambda n: -scores[n])
    return ranked[:FALLBACK_PERSONAS], True


def fallback_plan(
    data: Any, request: Request, personas: Mapping[str, Persona], prompt: str
) -> tuple[Plan, list[str]] | None:
    """When the planner's last answer copied the prompt or held placeholders (see
    :func:`content_problems`): a plan that says what it is, the request as it was asked
    sent to the personas whose descriptions match it best (:func:`best_personas`), one
    task each; and the sentence that says so. None for any other fault."""
    copied = structural_plan(data)
    if copied is None:
        return None
    problems = content_problems(copied, prompt)
    if not problems or not personas:
        return None
    names, matched = best_personas(request.text, personas)
    tasks = [
        TaskSpec(
            id=f"request-{name}",
            persona=name,
            title="The request as asked (no usable plan)",
            instructions=(
                "The planner could not split this request into tasks, so it comes to you as "
                "the user asked it (see the request above). Answer it as well as your role "
                "allows; say what falls outside your role."
            ),
        )
        for name in names
    ]
    why = "whose description matches it best" if matched else "(no description matched it)"
    change = (
        f"the planner's plan was not written for the request ({problems[0]}); the request "
        f"goes as it was asked to {', '.join(names)} {why}"
    )
    return Plan(tasks=tasks), [change]


def candidate_personas(text: str, personas: Mapping[str, Persona], limit: int) -> list[str]:
    """The names of at most ``limit`` personas to offer the planner for ``text``: every one
    when there are no more than ``limit``; else those ``text`` names (``@name`` or the bare
    name), then those whose name and description match ``text`` best by BM25 (bm25s,
    English stop words), best first; when nothing matches at all, the first ``limit`` by
    name."""
    names = list(personas)
    if len(names) <= limit:
        return names
    named = [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
    ranked = _bm25_ranked(text, personas, limit)
    best = list(dict.fromkeys([*named, *ranked]))[:limit]
    return best or sorted(names)[:limit]


def _bm25_ranked(text: str, personas: Mapping[str, Persona], limit: int) -> list[str]:
    """Up to ``limit`` persona names by BM25 score of name and description against
    ``text``, best first, only those that match at all."""
    names = list(personas)
    import bm25s  # numpy behind it: loaded only for a catalog this large

    corpus = [f"{name} {name.replace('-', ' ')} {personas[name].description}" for name in names]
    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    query = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)
    if not query[0]:  # nothing but stop words
        return []
    found, scores = index.retrieve(query, k=limit, show_progress=False)
    return [names[int(i)] for i, score in zip(found[0], scores[0], strict=True) if score > 0]


def cut_plan(plan: Plan, max_tasks: int) -> tuple[Plan, list[str]]:
    """The first ``max_tasks`` tasks of ``plan`` whose dependencies are all kept (a task
    depending on a cut one is cut too), and the sentence that says what was cut."""
    kept: list[TaskSpec] = []
    ids: set[str] = set()
    for task in plan.tasks:
        if len(kept) < max_tasks and all(d in ids for d in task.depends_on):
            kept.append(task)
            ids.add(task.id)
    cut = [t.id for t in plan.tasks if t.id not in ids]
    change = (
        f"the plan had {len(plan.tasks)} tasks, over the planner's cap of {max_tasks}: "
        f"cut {', '.join(cut)}"
    )
    return Plan(tasks=kept), [change]


def catalog_text(personas: Mapping[str, Persona]) -> str:
    """The persona catalog the planner sees: ``- name: description`` lines."""
    return "\n".join(f"- {p.name}: {p.description}" for p in personas.values())


def planner_message(
    request: Request, personas: Mapping[str, Persona], max_tasks: int = MAX_PLANNED_TASKS
) -> str:
    """The planner's user message: persona catalog, request, shared context."""
    parts = [
        f"## Personas\n\n{catalog_text(personas)}",
        f"## Request\n\n{request.text}",
        f"Plan at most {max_tasks} tasks. Call {PLAN_TOOL} with the plan.",
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
        max_tasks: int = MAX_PLANNED_TASKS,
        candidates: int = PLANNER_CANDIDATES,
    ) -> None:
        self.llm = llm
        self.prompt = prompt
        self.personas = personas
        self.model = model
        self.max_tokens = max_tokens
        self.limits = PlanLimits.for_output(max_tokens, max_tasks, model)
        self.repairs = repairs
        self.candidates = candidates

    @property
    def cap(self) -> int:
        """Tasks in a plan, at most: min(CREWBOX_MAX_PLANNED_TASKS, output tokens /
        TOKENS_PER_TASK); also the schema's ``maxItems`` and said in the planner's message."""
        return self.limits.max_tasks

    def offered(self, request: Request) -> dict[str, Persona]:
        """The personas the planner sees for ``request`` (:func:`candidate_personas`)."""
        names = candidate_personas(request.text, self.personas, self.candidates)
        return {name: self.personas[name] for name in names}

    def plan(
        self,
        request: Request,
        on_call: Callable[[Usage], None],
        on_adjust: Callable[[list[str]], None] | None = None,
        llm: LLMClient | None = None,
        on_offer: Callable[[list[str]], None] | None = None,
    ) -> Plan:
        """A valid plan for ``request``; ``on_call`` receives each LLM call's usage.

        With more personas than ``candidates``, the planner sees only those
        :meth:`offered` returns, told to ``on_offer`` first (a plan may still name any
        known persona). A plan over :attr:`cap` is asked again once, then cut
        (:func:`cut_plan`, told to ``on_adjust``), never refused.

        When the repairs are used up and the last plan's only faults are references (a
        dependency on a task that is not in the plan or on itself, a repeated id), those
        are pruned by :func:`prune_references` and ``on_adjust`` receives what changed:
        small local models rarely get references right, and the run is worth more than a
        PlanError. A last plan copied from the prompt or holding placeholders gives way to
        :func:`fallback_plan` (the request as asked, to the best-matching personas), also
        told to ``on_adjust``. Any other fault (unknown persona, cycle, bad fields) stays an
        error.

        ``llm``: the client for this run (e.g. behind its budget); None: the planner's own.

        Raises:
            PlanError: still invalid after the repairs (nothing is dispatched).
            LLMAPIError: the provider failed.
            BudgetExceededError: the run's budget cannot cover a planner call.
        """
        offered = self.offered(request)
        if len(offered) < len(self.personas) and on_offer:
            on_offer(list(offered))
        ask = Message(role="user", content=planner_message(request, offered, self.cap))
        messages = [ask]
        problems: list[str] = []
        data: Any = None
        asked_over_cap = False
        for _ in range(self.repairs + 1):
            response = self._call(messages, llm or self.llm, offered)
            on_call(response.usage)
            data = plan_input(response)
            plan, problems = (
                parse_plan(data, self.personas, None, self.prompt.prompt)
                if data is not None
                else (None, [no_plan(response)])
            )
            if plan is not None and len(plan.tasks) <= self.cap:
                return plan
            if plan is not None and asked_over_cap:
                return self._cut(plan, on_adjust)
            if plan is not None:
                asked_over_cap = True
                problems = [f"at most {self.cap} tasks, not {len(plan.tasks)}"]
            messages = [ask, *repair_messages(response, problems)]  # only the latest try
        pruned = pruned_plan(data, self.personas, None, self.prompt.prompt)
        if pruned is not None and len(pruned[0].tasks) > self.cap:
            cut, cuts = cut_plan(pruned[0], self.cap)
            pruned = cut, [*pruned[1], *cuts]
        pruned = pruned or fallback_plan(data, request, offered, self.prompt.prompt)
        if pruned is not None:
            if on_adjust:
                on_adjust(pruned[1])
            return pruned[0]
        raise PlanError(
            f"the planner produced no valid plan after {self.repairs + 1} tries: "
            + "; ".join(problems),
            problems,
        )

    def _cut(self, plan: Plan, on_adjust: Callable[[list[str]], None] | None) -> Plan:
        cut, changes = cut_plan(plan, self.cap)
        if on_adjust:
            on_adjust(changes)
        return cut

    def _call(
        self, messages: list[Message], llm: LLMClient, offered: Mapping[str, Persona]
    ) -> LLMResponse:
        return llm.complete(
            system=[SystemBlock(text=self.prompt.prompt, cache=True)],
            messages=messages,
            tools=[plan_tool(offered, self.limits)],
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


def no_plan(response: LLMResponse) -> str:
    """Why a response holds no plan, said so the model can do better on the next try."""
    if response.stop_reason == "max_tokens":
        return (
            "the answer was cut off at the output token limit before the plan was complete; "
            "keep each task's instructions to a few sentences"
        )
    return f"the answer did not call {PLAN_TOOL} with a JSON plan"


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
