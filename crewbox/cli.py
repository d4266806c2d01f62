"""The ``crewbox`` command: the one place that wires the orchestrator and the workers together.

Every error crewbox raises on purpose ends as one line ``crewbox: error: ...`` on stderr and
a non-zero exit (2 for bad input); nothing prints a bare traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from crewbox import telemetry
from crewbox.budget import unpriced_models
from crewbox.config import Settings
from crewbox.dlq import dead_letters
from crewbox.egress import LISTEN_PORT
from crewbox.errors import CrewboxError, RunNotFoundError, UserError
from crewbox.estimate import Estimate, synthesis_estimate, task_estimate, total
from crewbox.limits import check_request_size
from crewbox.llm.base import LLMClient
from crewbox.llm.factory import make_client, service_connection
from crewbox.llm.limiter import ChangeSink, describe
from crewbox.llm.ratelimit import RateLimits, rate_limited
from crewbox.local import LocalWorkers
from crewbox.models import ConcurrencyChange, ContextFile, Event, Request, RunSummary, Task
from crewbox.personas import InvalidPersona, Persona, load_personas, load_role_prompt
from crewbox.privileges import (
    drop_privileges,
    forget_secret_environment,
    parse_run_as,
    set_non_dumpable,
)
from crewbox.procs import is_dead_local
from crewbox.progress import ProgressPrinter, money, usage_text
from crewbox.queue import make_queue
from crewbox.queue.base import TaskQueue, default_worker_id
from crewbox.queue.rq import RQQueue
from crewbox.redis_client import check_redis
from crewbox.runlog import make_run_log
from crewbox.runlog.base import RunLog
from crewbox.runlog.files import FileRunLog
from crewbox.runlog.mirror import MirroredRunLog
from crewbox.store import RunStore
from crewbox.subagents import offers_task, read_subagents
from orchestrator.plan import load_plan_file
from orchestrator.run import pending_work
from orchestrator.service import Orchestrator
from worker.service import TaskRunner, check_persona
from worker.supervisor import beating, supervise

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def settings() -> Settings:
    """Settings from the environment, with a one-line error for a bad value."""
    try:
        return Settings()
    except ValueError as exc:
        first = str(exc).splitlines()
        raise UserError(f"invalid setting: {' '.join(first[:3])}") from exc


@click.group()
@click.version_option(package_name="crewbox")
def cli() -> None:
    """crewbox: LLM personas side by side, each in its own box; one answer."""


# -- run ---------------------------------------------------------------------------------
F = TypeVar("F", bound=Callable[..., Any])


def request_options(command: F) -> F:
    """The arguments `run` and `submit` share: TEXT, --context-file, --plan, --format,
    --budget-usd."""
    options = [
        click.argument("text", required=False),
        click.option(
            "--context-file",
            "context_files",
            multiple=True,
            type=click.Path(path_type=Path),
            help="A file every task sees as shared context (repeatable).",
        ),
        click.option(
            "--plan",
            "plan_file",
            type=click.Path(path_type=Path),
            help="A plan file (JSON/YAML) to run instead of asking the planner.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["text", "json"]),
            default="text",
            help="stdout: the answer (text) or the run summary (json).",
        ),
        click.option(
            "--budget-usd",
            type=float,
            help="Checked before every LLM call: no call that could cross it is made.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def workers_option(command: F) -> F:
    """``--workers N``: worker processes per persona in embedded mode."""
    return click.option(
        "--workers",
        "per_persona",
        type=click.IntRange(1, 64),
        default=1,
        show_default=True,
        help="Worker processes per persona (tasks of one persona run in parallel).",
    )(command)


@cli.command()
@request_options
@click.option("--allow-bash", is_flag=True, help="Let personas run Bash (no container around it!).")
@workers_option
@click.option(
    "--estimate", is_flag=True, help="Print what the plan may cost, then ask (needs --plan)."
)
@click.option("-y", "--yes", is_flag=True, help="With --estimate: run without asking.")
def run(
    text: str | None,
    context_files: tuple[Path, ...],
    plan_file: Path | None,
    fmt: str,
    budget_usd: float | None,
    allow_bash: bool,
    per_persona: int,
    estimate: bool,
    yes: bool,
) -> None:
    """Run a request here, without Docker or Redis: workers are local processes.

    Ctrl-C once cancels the run cleanly (exit 130); twice exits at once, and
    `crewbox resume RUN_ID` goes on with it later.
    """
    cfg = settings()
    personas = load_personas(cfg.prompts_dir)
    request = build_request(text, context_files, plan_file, budget_usd, allow_bash, personas)
    check_request_size(request, cfg)
    if estimate and not confirm_estimate(cfg, personas, request, yes):
        return
    check_llm_server(cfg)
    err.print(f"run {request.run_id} (Ctrl-C cancels it; twice exits, resumable)")
    drive_embedded(cfg, personas, request.run_id, per_persona, lambda o: o.run(request), fmt)


@cli.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@workers_option
def resume(run_id: str, fmt: str, per_persona: int) -> None:
    """Go on with a run that was cancelled, failed, or was left by a crash or a kill.

    Tasks that succeeded and whose artifacts still match their sha256 are not run again.
    In the cluster the request goes to the orchestrator service (which also takes over by
    itself the runs whose orchestrator died), and the run is followed to its end.
    """
    cfg = settings()
    if cfg.queue == "rq":
        resume_in_cluster(cfg, run_id, fmt)
        return
    check_llm_server(cfg)
    err.print(f"resuming run {run_id} (Ctrl-C cancels it; twice exits, resumable)")
    personas = load_personas(cfg.prompts_dir)
    RunStore.open(cfg.results_dir, run_id)  # a one-line error for an unknown run
    drive_embedded(cfg, personas, run_id, per_persona, lambda o: o.resume(run_id), fmt)


def resume_in_cluster(cfg: Settings, run_id: str, fmt: str) -> None:
    """``crewbox resume`` in the cluster: a resume request on the requests queue, then
    the run followed from there to its end.

    Raises:
        RunNotFoundError: no such run. UserError: an orchestrator drives it now, or it
            has nothing left to do.
    """
    queue = rq_queue(cfg)
    log = make_run_log(cfg)
    events = log.events(known_run(log, run_id))
    holder = log.owner(run_id)
    if holder:
        raise UserError(
            f"run {run_id} is being run by {holder}; `crewbox follow {run_id}` shows it"
        )
    if not pending_work(events, requested=True)[0]:
        raise UserError(
            f"run {run_id} has finished; nothing to resume (`crewbox dlq list {run_id}` "
            "shows its failed tasks, `crewbox dlq retry` runs one again)"
        )
    queue.request_resume(run_id)
    err.print(f"resume of run {run_id} requested; an orchestrator takes it up")
    follow_and_print(cfg, log, run_id, fmt, skip=len(events))


def drive_embedded(
    cfg: Settings,
    personas: dict[str, Persona],
    run_id: str,
    per_persona: int,
    drive: Callable[[Orchestrator], RunSummary],
    fmt: str = "text",
) -> None:
    """Drive a run with ``drive``, local workers started for the personas it dispatches
    to (crewbox.local), and print its outcome.

    Raises:
        SystemExit: 130 when the run was cancelled, 1 when it did not fully succeed.
    """
    set_non_dumpable()  # its environment may hold the key: no tool may read it in /proc
    telemetry.setup_tracing("crewbox-orchestrator")
    log_dir = cfg.results_dir / run_id / "logs"
    run_log = FileRunLog(cfg.results_dir)
    env = worker_env(cfg)
    workers = LocalWorkers((), log_dir, env, per_persona, cfg.max_workers, cfg.tasks_dir)
    printer = ProgressPrinter(err)

    def on_event(event: Event) -> None:
        workers.on_event(event)
        printer(event)

    orch = orchestrator(cfg, personas, on_event, run_log=run_log)
    with workers, cancel_on_first_interrupt(orch, run_id):
        summary = drive(orch)
    final = run_log.final(run_id) or ""
    print_outcome(summary, fmt, final, cfg.results_dir / run_id)


class cancel_on_first_interrupt:
    """While in the block: the first SIGINT cancels the orchestrator's runs, the second
    raises KeyboardInterrupt (exit at once; the run stays resumable)."""

    def __init__(self, orch: Orchestrator, run_id: str) -> None:
        self.orch = orch
        self.run_id = run_id
        self.previous: Any = None

    def __enter__(self) -> None:
        self.previous = signal.signal(signal.SIGINT, self._handle)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.orch.cancel.is_set():
            err.print(f"crewbox: exiting; `crewbox resume {self.run_id}` goes on with the run")
            raise KeyboardInterrupt
        self.orch.cancel.set()
        err.print(
            "[bold yellow]cancelling[/]: running tasks stop at their next turn (Ctrl-C "
            "again exits at once)"
        )


def build_request(
    text: str | None,
    context_files: tuple[Path, ...],
    plan_file: Path | None,
    budget_usd: float | None,
    allow_bash: bool,
    personas: dict[str, Persona],
) -> Request:
    """A validated Request from the CLI's arguments.

    Raises:
        UserError: no text (and no ``request`` in the plan file), unreadable context file,
            a budget that is not a positive finite number. PlanError: an invalid plan file.
    """
    plan, plan_text = load_plan_file(plan_file, personas) if plan_file else (None, None)
    text = text or plan_text
    if not text or not text.strip():
        raise UserError('no request: give TEXT, e.g. crewbox run "Plan a spring recital"')
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise UserError(f"--budget-usd must be a positive number of dollars, got {budget_usd}")
    return Request(
        text=text,
        context_files=[read_context(p) for p in context_files],
        plan=plan,
        budget_usd=budget_usd,
        allow_bash=allow_bash,
    )


def confirm_estimate(
    cfg: Settings, personas: dict[str, Persona], request: Request, yes: bool
) -> bool:
    """Print what ``request``'s plan may cost; True when the run should go on: ``yes``, or
    the user said so at the prompt. In a pipe (no TTY) it only prints (stdout) and says no.

    Raises:
        UserError: the request has no plan (``--estimate`` needs ``--plan``).
    """
    if request.plan is None:
        raise UserError(
            "--estimate needs --plan (the planner's own call would be billed before the "
            "estimate); e.g. crewbox run --estimate --plan workflows/spring-recital.yaml"
        )
    rows = plan_estimates(cfg, personas, request)
    table = Table("task", "persona", "model", "input tok (known)", "low", "high")
    for row in [*rows, total(rows)]:
        tok = f"{row.input_tokens:,}" if row.name != "synthesis" else ""
        cost = (money(row.low_usd), money(row.high_usd))
        table.add_row(row.name, row.persona, row.model, tok, *cost)
    interactive = sys.stdin.isatty() and not yes
    (err if yes or interactive else out).print(table)
    if yes:
        return True
    return interactive and click.confirm("Run it?", default=False, err=True)


def plan_estimates(cfg: Settings, personas: dict[str, Persona], request: Request) -> list[Estimate]:
    """One crewbox.estimate row per task of the request's plan, and one for the synthesis."""
    from crewbox.subagents import offered_subagents
    from worker.agent import system_blocks, task_message
    from worker.subagents import sub_agents, task_tool_definition
    from worker.tools import select_tools

    assert request.plan is not None
    tool_chars: dict[str, int] = {}  # per persona: its tools' definitions, read once

    def tools_of(persona: Persona) -> int:
        tools = select_tools(persona.tools, cfg.allow_bash or request.allow_bash)
        defs = [t.definition for t in tools]
        if subagents := offered_subagents(persona):  # Task (sub-agent calls not counted)
            defs.append(task_tool_definition(sub_agents(subagents, tools)))
        return len(json.dumps([d.model_dump() for d in defs]))

    rows = []
    for spec in request.plan.tasks:
        persona = personas[spec.persona]
        task = Task(run_id=request.run_id, spec=spec, request_text=request.text,
                    context=request.shared_context(), allow_bash=request.allow_bash)  # fmt: skip
        if persona.name not in tool_chars:
            tool_chars[persona.name] = tools_of(persona)
        chars = sum(len(b.text) for b in system_blocks(persona, task.context))
        chars += len(task_message(task, Path(spec.persona) / spec.id, None))
        chars += tool_chars[persona.name]
        model = cfg.model_of(persona.model)
        limits = (cfg.output_tokens(), persona.turns_or(cfg.max_turns))
        rows.append(task_estimate(spec.id, spec.persona, model, chars, *limits))
    synth = cfg.model_of(load_role_prompt(cfg.prompts_dir, "synthesizer").model)
    rows.append(synthesis_estimate(synth, cfg.synthesis_tokens(), cfg.output_tokens()))
    return rows


LLM_CONNECT_TIMEOUT_S = 3.0
"""How long `crewbox run` waits for the local LLM server to accept a connection."""


def check_llm_server(cfg: Settings) -> None:
    """With the ``openai`` provider (no Anthropic key), check that the server at
    CREWBOX_LLM_BASE_URL accepts connections, before a run is created for nothing.

    Raises:
        UserError: nothing listens there (one line: start a server or set a key).
    """
    if cfg.resolved_provider() != "openai":
        return
    url = urlsplit(cfg.llm_base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "localhost", port), LLM_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach the LLM server at {cfg.llm_base_url} ({exc.strerror or exc}); "
            "start an OpenAI-compatible server there (or set CREWBOX_LLM_BASE_URL), or set "
            "ANTHROPIC_API_KEY to use Claude"
        ) from exc


def log_limit_change(change: ConcurrencyChange) -> None:
    """A limit change of the orchestrator's own calls (planner, synthesizer): a log line."""
    logging.getLogger("crewbox.llm").warning("%s", describe(change))


def read_context(path: Path) -> ContextFile:
    """A context file's name and text.

    Raises:
        UserError: the file cannot be read as UTF-8 text.
    """
    try:
        return ContextFile(name=path.name, content=path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read context file {path}: {exc}") from exc


def worker_env(cfg: Settings) -> dict[str, str]:
    """Environment for local workers: the same settings, with absolute paths."""
    return {
        "CREWBOX_PROMPTS_DIR": str(cfg.prompts_dir.resolve()),
        "CREWBOX_WORKSPACES_DIR": str(cfg.workspaces_dir.resolve()),
        "CREWBOX_TASKS_DIR": str(cfg.tasks_dir.resolve()),
        "CREWBOX_RESULTS_DIR": str(cfg.results_dir.resolve()),
        "CREWBOX_QUEUE": "files",
    }


def orchestrator(
    cfg: Settings,
    personas: dict[str, Persona],
    on_event: Callable[[Event], None] | None,
    queue: TaskQueue | None = None,
    run_log: RunLog | None = None,
) -> Orchestrator:
    """An Orchestrator over the configured LLM, ``queue`` and ``run_log`` (defaults: the
    configured ones; in the cluster the Redis log mirrored into results/)."""
    return Orchestrator(
        cfg,
        make_client(cfg, log_limit_change),
        queue or make_queue(cfg),
        personas,
        load_role_prompt(cfg.prompts_dir, "orchestrator"),
        load_role_prompt(cfg.prompts_dir, "synthesizer"),
        run_log or cluster_run_log(cfg),
        on_event=on_event,
    )


def cluster_run_log(cfg: Settings, service: bool = False) -> RunLog:
    """The configured run log; in the cluster, Redis mirrored into results/."""
    primary = make_run_log(cfg, service)
    if cfg.queue != "rq":
        return primary
    return MirroredRunLog(primary, FileRunLog(cfg.results_dir))


def print_outcome(summary: RunSummary, fmt: str, final: str, folder: Path) -> None:
    """The answer or the summary JSON on stdout; budget and results folder on stderr.

    Raises:
        SystemExit: status 1 when the run did not fully succeed.
    """
    click.echo(summary.model_dump_json(indent=2) if fmt == "json" else final)
    if summary.budget_exceeded:
        err.print(
            f"[bold red]budget ${summary.budget_usd} reached[/]: tasks left were not dispatched"
        )
    err.print(f"results: {display_path(folder)}/")
    if summary.status == "cancelled":
        err.print(f"run cancelled; {resume_hint(summary.run_id)} runs what is left")
        raise SystemExit(130)
    if summary.status != "succeeded":
        raise SystemExit(1)


def resume_hint(run_id: str) -> str:
    """How to go on with a run: ``crewbox resume ID``, and in the cluster (its client runs
    in a container) the make target too."""
    hint = f"`crewbox resume {run_id}`"
    if os.environ.get("CREWBOX_QUEUE") == "rq":
        hint += f" (`make resume RUN={run_id}`)"
    return hint


def display_path(path: Path) -> str:
    """``path`` as the user knows it: CREWBOX_HOST_RESULTS_DIR in place of the results
    folder inside a container (set by the compose file), else as it is."""
    host = os.environ.get("CREWBOX_HOST_RESULTS_DIR")
    container = os.environ.get("CREWBOX_RESULTS_DIR")
    if host and container and str(path).startswith(container):
        return host + str(path)[len(container) :]
    return str(path)


# -- personas, status, results -----------------------------------------------------------
@cli.command()
@click.option("--long", "long_", is_flag=True, help="Every column and each persona's warnings.")
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object.")
def personas(long_: bool, as_json: bool) -> None:
    """List the personas of prompts/. Compact by default: name, model, tool count, warning
    count; --long adds description, tools, price, workspace, budget, turns and sub-agents and
    prints each persona's warnings; --json prints ``{"personas": [...], "invalid": [...]}``.
    The files that cannot be used are listed once each with the reason; models without a
    price are warned about on stderr."""
    cfg = settings()
    loaded = load_personas(cfg.prompts_dir, report_invalid=False)
    listed = [persona_listing(cfg, p) for p in loaded.values()]
    if as_json:
        print(json.dumps(personas_json(listed, loaded.invalid), indent=2))
        return
    table = long_table(cfg, listed) if long_ else compact_table(listed)
    print_wide(table)
    if long_:
        for item in listed:
            for note in item.warnings:
                out.print(f"[yellow]warning[/] {item.persona.name}: {note}", soft_wrap=True)
    for bad in loaded.invalid:
        out.print(f"[red]invalid[/] {bad.name}: {bad.reason}", soft_wrap=True)
    print_personas_footer(listed, len(loaded.invalid), long_)
    unpriced = [item.persona.name for item in listed if item.priced == "NO"]
    if unpriced:
        err.print(
            f"[yellow]warning[/]: no price in crewbox/llm/pricing.json for the model of "
            f"{', '.join(unpriced)}: their calls count as $0 and a budget cannot be held"
        )


@dataclass(frozen=True)
class PersonaListing:
    """What `crewbox personas` shows of one usable persona: the persona, its model id, its
    price note (``yes``/``local``/``NO``), its sub-agent names and its warnings."""

    persona: Persona
    model: str
    priced: str
    subagents: list[str]
    warnings: list[str]


def persona_listing(cfg: Settings, p: Persona) -> PersonaListing:
    """The listing of persona ``p``: its model, price note, sub-agents and warnings (those of
    loading it, a missing workspace, sub-agent files skipped)."""
    model, priced = model_price_note(cfg, p)
    subagents, skipped = read_subagents(p)
    if subagents and not offers_task(p):
        skipped.append("sub-agents not offered: its tools do not allow Task")
    return PersonaListing(p, model, priced, list(subagents), [*persona_warnings(cfg, p), *skipped])


def tools_text(tools: list[str] | None, count: bool) -> str:
    """A persona's tools for a table cell: ``all`` (no ``tools`` key), ``none`` (an empty
    list), else their number (``count``) or their names."""
    if tools is None:
        return "all"
    if not tools:
        return "none"
    return str(len(tools)) if count else ", ".join(tools)


def name_column(table: Table, listed: list[PersonaListing]) -> None:
    """Add the ``name`` column to ``table``: never cut with an ellipsis nor wrapped."""
    longest = max((len(item.persona.name) for item in listed), default=4)
    table.add_column("name", no_wrap=True, overflow="fold", min_width=longest)


def compact_table(listed: list[PersonaListing]) -> Table:
    """One short row per persona: name, model, tool count, warning count."""
    table = Table()
    name_column(table, listed)
    table.add_column("model", no_wrap=True)
    table.add_column("tools", justify="right")
    table.add_column("warnings", justify="right")
    for item in listed:
        tools = tools_text(item.persona.tools, count=True)
        table.add_row(item.persona.name, item.model, tools, str(len(item.warnings)))
    return table


def long_table(cfg: Settings, listed: list[PersonaListing]) -> Table:
    """Every column: name, description (cut), tools, model, priced, workspace, budget,
    turns, sub-agents."""
    table = Table()
    name_column(table, listed)
    for column in ("description", "tools", "model", "priced", "workspace", "budget", "turns",
                   "sub-agents"):  # fmt: skip
        table.add_column(column)
    for item in listed:
        row = persona_row(cfg, item.persona, item.model, item.priced)
        table.add_row(*row, ", ".join(item.subagents) or "-")
    return table


def print_wide(table: Table) -> None:
    """Print ``table`` at the terminal's width, or, into a file or a pipe, as wide as its
    widest row needs (so no cell is cut)."""
    if out.is_terminal:
        out.print(table)
        return
    needed = Measurement.get(out, out.options.update_width(100_000), table).maximum
    Console(file=out.file, highlight=False, width=max(needed, 80)).print(table)


def print_personas_footer(listed: list[PersonaListing], refused: int, long_: bool) -> None:
    """One line: how many personas load, how many files are refused, how many personas have
    warnings (and how to see them, when compact)."""
    warned = sum(1 for item in listed if item.warnings)
    line = f"{len(listed)} personas, {refused} files refused, {warned} with warnings"
    if warned and not long_:
        line += " (crewbox personas --long lists them)"
    out.print(line, soft_wrap=True)


def personas_json(listed: list[PersonaListing], invalid: list[InvalidPersona]) -> dict[str, Any]:
    """``{"personas": [{name, description, model, priced, tools (None: all), workspace,
    budget_usd (text or None), max_turns, sub_agents, warnings, file}], "invalid": [{name,
    file, reason}]}``."""
    rows = [
        {
            "name": item.persona.name,
            "description": item.persona.description,
            "model": item.model,
            "priced": item.priced,
            "tools": item.persona.tools,
            "workspace": item.persona.workspace,
            "budget_usd": None if item.persona.budget_usd is None else str(item.persona.budget_usd),
            "max_turns": item.persona.max_turns,
            "sub_agents": item.subagents,
            "warnings": item.warnings,
            "file": str(item.persona.path) if item.persona.path else None,
        }
        for item in listed
    ]
    refused = [{"name": b.name, "file": str(b.path), "reason": b.reason} for b in invalid]
    return {"personas": rows, "invalid": refused}


DESCRIPTION_CHARS = 60
"""How much of a description `crewbox personas` shows (real ones run to pages)."""


def persona_row(cfg: Settings, p: Persona, model: str, priced: str) -> list[str]:
    """The `crewbox personas` table row of a usable persona, but its sub-agents."""
    tools = tools_text(p.tools, count=False)
    description = p.description
    if len(description) > DESCRIPTION_CHARS:
        description = description[: DESCRIPTION_CHARS - 1] + "…"
    budget = money(p.budget_usd) if p.budget_usd is not None else "-"
    turns = str(p.turns_or(cfg.max_turns))
    return [p.name, description, tools, model, priced, p.workspace or "-", budget, turns]


def persona_warnings(cfg: Settings, p: Persona) -> list[str]:
    """What loading ``p`` overlooked, and a workspace folder that is missing from
    workspaces/ (when there is a workspaces/ here at all)."""
    notes = list(p.warnings)
    workspaces = cfg.workspaces_dir  # absent where crewbox runs without them (orchestrator)
    if p.workspace and workspaces.is_dir() and not (workspaces / p.workspace).is_dir():
        notes.append(f"no folder workspaces/{p.workspace}: it works without a workspace")
    return notes


def model_price_note(cfg: Settings, persona: Persona) -> tuple[str, str]:
    """The persona's model id and ``yes`` (priced), ``local`` (an OpenAI-compatible server:
    $0) or ``NO`` (not in pricing.json)."""
    model = cfg.model_of(persona.model)
    if cfg.resolved_provider() == "openai":
        return model, "local"
    return model, "NO" if unpriced_models(cfg, [model]) else "yes"


@cli.command()
@click.argument("run_id", required=False)
def status(run_id: str | None) -> None:
    """Show a run's tasks (the latest run without RUN_ID): status, worker, time, tokens, cost."""
    cfg = settings()
    log = make_run_log(cfg)
    run_id = run_id or latest_run_id(cfg, log)
    events, summary = log.events(run_id), log.summary(run_id)
    if not events and cfg.queue == "rq":  # expired from Redis: the run folder has it all
        log = FileRunLog(cfg.results_dir)
        events, summary = log.events(run_id), log.summary(run_id)
    if not events:
        raise RunNotFoundError(f"no run {run_id!r}; `crewbox status` shows the latest run")
    print_status(run_id, events, summary, run_state(cfg, log, run_id, events, summary))


def run_state(
    cfg: Settings, log: RunLog, run_id: str, events: list[Event], summary: RunSummary | None
) -> str:
    """One line on where a run stands; a run nobody drives is never shown as running."""
    if summary:
        return f"{summary.status}, {usage_text(summary.usage_total)}"
    failed = next((e.message for e in reversed(events) if e.kind == "run_failed"), None)
    if failed:
        return f"failed: {failed}"
    if log.owner(run_id):
        return "running"
    if cfg.queue == "rq":
        return "waiting for an orchestrator to take it over"
    return f"stopped (its process is gone); `crewbox resume {run_id}` goes on with it"


def print_status(run_id: str, events: list[Event], summary: RunSummary | None, state: str) -> None:
    """The task table of a run and its overall state, on stdout."""
    states = task_states(events)
    table = Table("task", "persona", "status", "worker", "seconds", "tokens", "cost")
    for task_id, s in states.items():
        table.add_row(
            task_id,
            s.get("persona", ""),
            s["status"],
            s.get("worker", ""),
            f"{s['duration_ms'] / 1000:.1f}" if "duration_ms" in s else "",
            f"{s['tokens']:,}" if "tokens" in s else "",
            money(s["cost_usd"]) if "cost_usd" in s else "",
        )
    if states:
        out.print(table)
    out.print(f"run {run_id}: {state}")


def latest_run_id(cfg: Settings, log: RunLog) -> str:
    """The newest run of the run log (run ids sort by time).

    Raises:
        UserError: there is no run yet.
    """
    runs = log.runs() or FileRunLog(cfg.results_dir).runs()
    if not runs:
        raise UserError("no run yet; start one with `crewbox run TEXT` or `make submit`")
    return runs[-1]


def task_states(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Each task's latest state from a run's events: status plus worker, usage, timing."""
    states: dict[str, dict[str, Any]] = {}
    for event in events:
        if not event.task_id or not event.kind.startswith("task_"):
            continue
        if event.kind == "task_dead_lettered":
            continue
        state = states.setdefault(event.task_id, {"persona": event.persona})
        state["status"] = event.kind.removeprefix("task_")
        state.update(
            {
                k: v
                for k, v in event.data.items()
                if k in ("worker", "duration_ms", "tokens", "cost_usd")
            }
        )
    return states


@cli.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def results(run_id: str, fmt: str) -> None:
    """List a run's artifacts (path, bytes, sha256) and where its answer is."""
    cfg = settings()
    log = make_run_log(cfg)
    summary = log.summary(run_id) or FileRunLog(cfg.results_dir).summary(run_id)
    if summary is None:
        raise unfinished(log.events(run_id) or FileRunLog(cfg.results_dir).events(run_id), run_id)
    if fmt == "json":
        click.echo(summary.model_dump_json(indent=2))
        return
    folder = display_path(cfg.results_dir / run_id)
    table = Table("artifact", "bytes", "sha256")
    for r in summary.tasks:
        for a in r.artifacts:
            table.add_row(
                f"{folder}/{r.persona}/{r.task_id}/{a.path}", f"{a.bytes:,}", a.sha256[:16]
            )
    out.print(table)
    out.print(f"answer: {folder}/final.md  ({summary.status})")


def unfinished(events: list[Event], run_id: str) -> CrewboxError:
    """The error of `crewbox results` for a run without a summary: it failed (and why),
    it is not finished, or it is unknown."""
    failed = next((e.message for e in reversed(events) if e.kind == "run_failed"), None)
    if failed is not None:
        return CrewboxError(
            f"run {run_id} failed: {failed}; `crewbox resume {run_id}` tries it again"
        )
    if events:
        return UserError(f"run {run_id} has not finished; `crewbox status {run_id}` shows it")
    return RunNotFoundError(f"no run {run_id!r}; `crewbox status` shows the latest run")


# -- the cluster -------------------------------------------------------------------------
def rq_queue(cfg: Settings) -> RQQueue:
    """The Redis queue of the cluster.

    Raises:
        UserError: the queue backend is not ``rq`` (embedded mode has no cluster).
    """
    if cfg.queue != "rq":
        raise UserError(
            "this command needs the cluster (CREWBOX_QUEUE=rq): run it with "
            "`make submit` / `docker compose exec orchestrator crewbox ...`, "
            "or use `crewbox run` without Docker"
        )
    return RQQueue.from_settings(cfg)


@cli.command()
@request_options
@click.option("--detach", is_flag=True, help="Print the run_id and return at once.")
@click.option(
    "--estimate",
    is_flag=True,
    help="Print what the plan may cost on Claude, then ask (needs --plan).",
)
@click.option("-y", "--yes", is_flag=True, help="With --estimate: submit without asking.")
def submit(
    text: str | None,
    context_files: tuple[Path, ...],
    plan_file: Path | None,
    fmt: str,
    budget_usd: float | None,
    detach: bool,
    estimate: bool,
    yes: bool,
) -> None:
    """Submit a request to the cluster, follow its progress, print the answer."""
    cfg = settings()
    queue = rq_queue(cfg)
    personas = load_personas(cfg.prompts_dir)
    request = build_request(text, context_files, plan_file, budget_usd, False, personas)
    # the client cannot see which model the services use: Claude's window here, the
    # orchestrator checks against its own before any call
    check_request_size(request, cfg.model_copy(update={"provider": "anthropic"}))
    if estimate:
        # the client cannot see which services have a key: price as if all used Claude
        claude = cfg.model_copy(update={"provider": "anthropic"})
        err.print(f"[dim]priced as if every service used Claude ({cfg.model}); "
                  "services on the local model cost $0[/]")  # fmt: skip
        if not confirm_estimate(claude, personas, request, yes):
            return
    log = make_run_log(cfg)
    log.create(request)
    queue.submit(request)
    if detach:
        click.echo(request.run_id)
        return
    err.print(f"submitted run {request.run_id} (Ctrl-C stops following; the run goes on)")
    follow_and_print(cfg, log, request.run_id, fmt)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def follow(run_id: str | None, fmt: str) -> None:
    """Follow a run's progress (the latest without RUN_ID) and print its answer."""
    cfg = settings()
    log = make_run_log(cfg)
    run_id = known_run(log, run_id) if run_id else latest_run_id(cfg, log)
    err.print(f"following run {run_id} (Ctrl-C stops following; the run goes on)")
    follow_and_print(cfg, log, run_id, fmt)


def known_run(log: RunLog, run_id: str) -> str:
    """``run_id``, once the run log knows it.

    Raises:
        RunNotFoundError: it does not (one line: how to find the runs).
    """
    log.request(run_id)
    return run_id


def follow_and_print(cfg: Settings, log: RunLog, run_id: str, fmt: str, skip: int = 0) -> None:
    """Follow ``run_id`` until it ends (its first ``skip`` events passed over), then print
    its outcome."""
    follow_run(log, run_id, ProgressPrinter(err), skip)
    summary = log.summary(run_id)
    if summary is None:
        raise CrewboxError(f"run {run_id} ended without a summary")
    print_outcome(summary, fmt, log.final(run_id) or "", cfg.results_dir / run_id)


def follow_run(log: RunLog, run_id: str, on_event: Callable[[Event], None], skip: int = 0) -> None:
    """Pass the run's events (but the first ``skip``) to ``on_event`` until it finishes.

    Raises:
        CrewboxError: the run failed (its message, e.g. the PlanError, as the error line), or
            stopped with nobody to go on with it (embedded).
    """
    seen = 0
    for event in log.follow(run_id):
        if event is None:
            if stopped(log, run_id):
                raise CrewboxError(
                    f"run {run_id} is not running; `crewbox resume {run_id}` goes on with it"
                )
            continue
        seen += 1
        if seen <= skip:
            continue
        on_event(event)
        if event.kind == "run_finished":
            return
        if event.kind == "run_failed":
            raise CrewboxError(f"run {run_id} failed: {event.message}")


def stopped(log: RunLog, run_id: str) -> bool:
    """True for an embedded run that nobody drives and that has not finished (in the
    cluster, an orchestrator takes such a run over: it is not stopped)."""
    return isinstance(log, FileRunLog) and not log.owner(run_id) and log.summary(run_id) is None


@cli.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run: nothing more is dispatched, running tasks stop at their next turn, the
    answer covers what finished."""
    log = make_run_log(settings())
    summary = log.summary(known_run(log, run_id))
    if summary is not None:
        raise UserError(f"run {run_id} has already ended ({summary.status}); nothing to cancel")
    log.request_cancel(run_id)
    err.print(f"cancel requested for run {run_id}; `crewbox follow {run_id}` shows it end")


# -- dead-letter queue -------------------------------------------------------------------
@cli.group()
def dlq() -> None:
    """Tasks that failed after all their retries: list, retry, drop."""


@dlq.command("list")
@click.argument("run_id", required=False)
def dlq_list(run_id: str | None) -> None:
    """Failed tasks of one run, or of every run."""
    log = make_run_log(settings())
    table = Table("run", "task", "persona", "attempts", "cost", "error")
    for rid in [known_run(log, run_id)] if run_id else log.runs():
        for letter in dead_letters(log.events(rid)):
            table.add_row(
                rid,
                letter.task_id,
                letter.persona,
                str(letter.attempts),
                money(letter.cost_usd),
                letter.error[:120],
            )
    if not table.row_count:
        out.print("no task in the dead-letter queue" + (f" of run {run_id}" if run_id else ""))
        return
    out.print(table)


@dlq.command("retry")
@click.argument("run_id")
@click.argument("task_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def dlq_retry(run_id: str, task_id: str, fmt: str) -> None:
    """Run a failed task again, then the tasks skipped because of it; write a new answer."""
    cfg = settings()
    log = make_run_log(cfg)
    letter = letter_of(log, known_run(log, run_id), task_id)
    if cfg.queue != "rq":
        check_llm_server(cfg)  # before the retry is logged
    before = len(log.events(run_id))
    retried = Event(kind="dlq_retried", run_id=run_id, task_id=task_id, persona=letter.persona)
    log.append(retried)
    if cfg.queue == "rq":
        err.print(f"retry of {task_id} requested; an orchestrator takes it up")
        follow_and_print(cfg, log, run_id, fmt, skip=before)
        return
    personas = load_personas(cfg.prompts_dir)
    drive_embedded(cfg, personas, run_id, 1, lambda o: o.resume(run_id), fmt)


@dlq.command("drop")
@click.argument("run_id")
@click.argument("task_id")
def dlq_drop(run_id: str, task_id: str) -> None:
    """Take a failed task out of the dead-letter queue (it stays failed in its run)."""
    log = make_run_log(settings())
    letter = letter_of(log, run_id, task_id)
    log.append(
        Event(
            kind="dlq_dropped",
            run_id=run_id,
            task_id=task_id,
            persona=letter.persona,
            message="dropped from the dead-letter queue",
        )
    )
    err.print(f"dropped {task_id} of run {run_id} from the dead-letter queue")


def letter_of(log: RunLog, run_id: str, task_id: str) -> Any:
    """The dead letter of ``task_id`` in ``run_id``.

    Raises:
        UserError: the task is not in the dead-letter queue.
    """
    for letter in dead_letters(log.events(run_id)):
        if letter.task_id == task_id:
            return letter
    raise UserError(
        f"task {task_id!r} of run {run_id} is not in the dead-letter queue; "
        f"`crewbox dlq list {run_id}` lists it"
    )


@cli.command("orchestrator")
def orchestrator_service() -> None:
    """Serve the requests queue and take over orphaned runs (the cluster's orchestrator)."""
    from orchestrator.pool import RunPool

    cfg = settings().with_secrets_loaded()
    setup_logging()
    telemetry.setup_tracing("crewbox-orchestrator")
    rq_queue(cfg)  # the one-line error outside the cluster
    check_redis(cfg)  # waits up to 30 s for a Redis still starting; a wrong one: one line
    queue = RQQueue.from_settings(cfg, service=True)
    log = logging.getLogger("crewbox.orchestrator")

    def on_event(event: Event) -> None:
        log.info(
            "run %s %s %s %s", event.run_id, event.kind, event.task_id or "", event.message[:120]
        )

    run_log = cluster_run_log(cfg, service=True)
    orch = orchestrator(cfg, load_personas(cfg.prompts_dir), on_event, queue, run_log)
    orch.fail_without_worker = True  # a persona whose service is not up: fail, never wait
    pool = RunPool(orch, run_log, cfg.max_runs)
    stop = orch.shutdown = stop_on_signals()
    threading.Thread(target=pool.serve_takeovers, args=(stop,), daemon=True).start()
    log.info(
        "orchestrator %s serving requests (%d runs at once)", default_worker_id(), cfg.max_runs
    )
    queue.serve_requests(pool.accept, resume=pool.accept_resume, stop=stop)


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=LISTEN_PORT, show_default=True, help="Port to listen on.")
def egress(host: str, port: int) -> None:
    """The cluster's egress proxy: CONNECT tunnels to the Anthropic API only."""
    import asyncio

    from crewbox.egress import EgressProxy, allowed_destinations

    setup_logging()
    cfg = settings()
    allowed = allowed_destinations(cfg.anthropic_base_url, cfg.egress_allow)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(EgressProxy(allowed).serve(host, port))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
def web(host: str, port: int) -> None:
    """The run view in a browser: runs, and per run a live timeline (one lane per persona),
    tokens and cost per persona and the dead-letter queue. Read-only (crewbox/web)."""
    from crewbox.web.serve import serve

    cfg = settings()
    serve(lambda: make_run_log(cfg), host, port)


@cli.command()
@click.option("--listen", default="0.0.0.0:6380", show_default=True, help="host:port to serve.")
@click.option("--to", "target", required=True, help="host:port every connection goes to.")
def relay(listen: str, target: str) -> None:
    """A worker host's relay to the cluster's Redis (crewbox.relay): bytes only, TLS end to
    end."""
    import asyncio

    from crewbox.relay import Relay, parse_address

    setup_logging()
    try:
        (listen_host, listen_port), (host, port) = parse_address(listen), parse_address(target)
    except ValueError as exc:
        raise UserError(f"crewbox relay: {exc}") from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Relay(host, port).serve(listen_host, listen_port))


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also workers whose heartbeat stopped.")
def workers(show_all: bool) -> None:
    """Each persona's live workers: busy with which task, since when; then which personas
    of prompts/ have no live worker, and how to start them."""
    cfg = settings()
    table = Table("queue", "worker", "host", "alive", "state", "task", "since")
    found = sorted(rq_queue(cfg).workers(), key=lambda w: (w.queue, w.name))
    for w in (w for w in found if w.alive or show_all):
        since = w.since.strftime("%H:%M:%S") if w.since else ""
        table.add_row(
            w.queue, w.name, w.hostname, "yes" if w.alive else "no", w.state, w.task, since
        )
    out.print(table)
    catalog = list(load_personas(cfg.prompts_dir, report_invalid=False))
    print_idle_personas(catalog, {w.queue for w in found if w.alive})


def print_idle_personas(catalog: list[str], live: set[str]) -> None:
    """One line: how many personas of ``catalog`` have a live worker (their queue names are
    in ``live``); then the others and the command that starts them."""
    idle = [name for name in catalog if name not in live]
    out.print(f"{len(catalog) - len(idle)} of {len(catalog)} personas have live workers")
    if idle:
        names = " ".join(idle)
        out.print(f'no live worker: {names}; start them: make up PERSONAS="{names}"')


@cli.command()
@click.argument("persona")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default="all", help="Lines from the end of each container's log.")
def logs(persona: str, follow: bool, tail: str) -> None:
    """Print a persona's container logs (every scaled container), through the Docker SDK."""
    from crewbox.containers import print_service_logs

    print_service_logs(persona, follow=follow, tail=tail)


# -- services ----------------------------------------------------------------------------
@cli.command()
@click.option("--persona", required=True, help="The persona whose queue this worker serves.")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--parent-pid", type=int, help="Exit (stopping the task in hand) once it is gone.")
def worker(persona: str, burst: bool, parent_pid: int | None) -> None:
    """Serve one persona's queue (what `crewbox run` and the cluster start per persona).

    The worker reads its secrets first, then drops to CREWBOX_RUN_AS (crewbox.privileges),
    so the tools it runs cannot read them; the secret variables leave its environment. In
    the cluster (rq, neither --burst nor --parent-pid) a supervisor forks it and restarts
    the container when it stops heartbeating (worker.supervisor)."""
    setup_logging()
    cfg = settings().with_secrets_loaded()
    forget_secret_environment()
    own = check_persona(load_personas(cfg.prompts_dir), persona)
    if cfg.queue == "rq":
        check_redis(cfg)  # a wrong address, protocol or password: one line, exit 1
    if cfg.queue != "rq" or burst or parent_pid:  # a local worker: its parent supervises it
        serve_worker(cfg, own, burst, parent_pid, None)
        return
    uid = parse_run_as(cfg.run_as)[0] if cfg.run_as and os.geteuid() == 0 else None
    set_non_dumpable()

    def child(beat_fd: int) -> None:
        try:
            serve_worker(cfg, own, burst, parent_pid, beat_fd)
        except CrewboxError as exc:
            err.print(f"crewbox: error: {exc}", markup=False)
            sys.exit(exc.exit_code)

    sys.exit(supervise(child, child_uid=uid))


def serve_worker(
    cfg: Settings, own: Persona, burst: bool, parent_pid: int | None, beat_fd: int | None
) -> None:
    """Drop privileges, then serve ``own``'s queue; beat into ``beat_fd`` for a supervisor."""
    drop_privileges(cfg.run_as)
    telemetry.setup_tracing(f"crewbox-worker-{own.name}")
    sink = ChangeSink()
    runner = TaskRunner(
        cfg,
        own,
        worker_llm(cfg, own, sink),
        default_worker_id(),
        run_log=make_run_log(cfg, service=True),
        limit_sink=sink,
    )
    stop = stop_on_signals()
    if parent_pid:
        threading.Thread(target=exit_with_parent, args=(parent_pid,), daemon=True).start()
    logging.getLogger("crewbox.worker").info("worker %s serving %s", runner.worker_id, own.name)
    queue = make_queue(cfg, service=True)
    with beating(beat_fd) if beat_fd is not None else contextlib.nullcontext():
        queue.serve(own.name, runner, worker_id=runner.worker_id, burst=burst, stop=stop)


def worker_llm(cfg: Settings, persona: Persona, sink: ChangeSink) -> LLMClient:
    """The worker's LLM: the configured client behind the persona's rate limits (its front
    matter, else CREWBOX_REQUESTS_PER_MINUTE / CREWBOX_INPUT_TOKENS_PER_MINUTE), shared
    through Redis in the cluster, split among the persona's processes embedded."""
    limits = RateLimits(
        persona.requests_per_minute or cfg.requests_per_minute,
        persona.input_tokens_per_minute or cfg.input_tokens_per_minute,
    )
    connection = service_connection(cfg) if cfg.queue == "rq" else None  # one, for both
    share = 1 if connection is not None else cfg.rate_limit_share
    client = make_client(cfg, sink, connection, persona.name)
    return rate_limited(client, limits.shared_by(share), persona.name, connection)


PARENT_CHECK_S = 0.5
"""How often a local worker checks that the CLI process that started it still runs."""


def exit_with_parent(parent_pid: int) -> None:
    """End this process at once when process ``parent_pid`` of this host is gone (the CLI
    that ran the run was killed): the call in flight is abandoned, not waited for, and the
    task is dispatched again by ``crewbox resume``."""
    while not is_dead_local(socket.gethostname(), str(parent_pid)):
        time.sleep(PARENT_CHECK_S)
    logging.getLogger("crewbox.worker").warning("parent %d is gone: exiting", parent_pid)
    os._exit(0)


def setup_logging() -> None:
    """Log lines on stderr at CREWBOX_LOG_LEVEL (default INFO): ``time level logger:
    message``, or with CREWBOX_LOG_FORMAT=json one JSON object a line carrying run_id,
    task_id, attempt and trace_id (crewbox.telemetry.setup_logging).

    Raises:
        UserError: CREWBOX_LOG_FORMAT is neither text nor json.
    """
    kind = os.environ.get(telemetry.LOG_FORMAT_VAR, "text").strip().lower() or "text"
    try:
        telemetry.setup_logging(os.environ.get("CREWBOX_LOG_LEVEL", "INFO"), kind)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the service finishes its task, then exits."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def main() -> None:
    """Entry point: run the CLI, turning every error into one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("crewbox: aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CrewboxError as exc:
        err.print(f"crewbox: error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("crewbox: interrupted")
        sys.exit(130)
    except Exception as exc:  # last resort: never a bare traceback
        if os.environ.get("CREWBOX_DEBUG"):
            raise
        err.print(
            f"crewbox: internal error: {type(exc).__name__}: {exc} "
            "(set CREWBOX_DEBUG=1 for the traceback)",
            markup=False,
        )
        sys.exit(1)
