"""The ``crewbox`` command: the one place that wires the orchestrator and the workers together.

Every error crewbox raises on purpose ends as one line ``crewbox: error: ...`` on stderr and
a non-zero exit (2 for bad input); nothing prints a bare traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from crewbox.config import Settings
from crewbox.errors import CrewboxError, UserError
from crewbox.llm.factory import make_client
from crewbox.local import LocalWorkers
from crewbox.models import ContextFile, Event, Request, RunSummary
from crewbox.personas import Persona, load_personas, load_role_prompt
from crewbox.progress import ProgressPrinter, money, usage_text
from crewbox.queue import make_queue
from crewbox.queue.base import TaskQueue, default_worker_id
from crewbox.queue.rq import RQQueue, wait_for_redis
from crewbox.store import RunStore
from orchestrator.plan import load_plan_file
from orchestrator.service import Orchestrator
from worker.service import TaskRunner, check_persona

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
            "--budget-usd", type=float, help="Dispatch nothing more once the run costs this much."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@request_options
@click.option("--allow-bash", is_flag=True, help="Let personas run Bash (no container around it!).")
def run(
    text: str | None,
    context_files: tuple[Path, ...],
    plan_file: Path | None,
    fmt: str,
    budget_usd: float | None,
    allow_bash: bool,
) -> None:
    """Run a request here, without Docker or Redis: workers are local processes."""
    cfg = settings()
    personas = load_personas(cfg.prompts_dir)
    request = build_request(text, context_files, plan_file, budget_usd, allow_bash, personas)
    names = {t.persona for t in request.plan.tasks} if request.plan else set(personas)
    log_dir = cfg.results_dir / request.run_id / "logs"
    with LocalWorkers(names, log_dir, env=worker_env(cfg)):
        summary = orchestrator(cfg, personas, ProgressPrinter(err)).run(request)
    folder = cfg.results_dir / request.run_id
    print_outcome(summary, fmt, (folder / "final.md").read_text(encoding="utf-8"), folder)


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
            negative budget. PlanError: an invalid plan file.
    """
    plan, plan_text = load_plan_file(plan_file, personas) if plan_file else (None, None)
    text = text or plan_text
    if not text or not text.strip():
        raise UserError('no request: give TEXT, e.g. crewbox run "Plan a spring recital"')
    if budget_usd is not None and budget_usd <= 0:
        raise UserError(f"--budget-usd must be positive, got {budget_usd}")
    return Request(
        text=text,
        context_files=[read_context(p) for p in context_files],
        plan=plan,
        budget_usd=budget_usd,
        allow_bash=allow_bash,
    )


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
    on_finish: Callable[[RunSummary, str], None] | None = None,
    queue: TaskQueue | None = None,
) -> Orchestrator:
    """An Orchestrator over the configured LLM and ``queue`` (default: the configured one)."""
    return Orchestrator(
        cfg,
        make_client(cfg),
        queue or make_queue(cfg),
        personas,
        load_role_prompt(cfg.prompts_dir, "orchestrator"),
        load_role_prompt(cfg.prompts_dir, "synthesizer"),
        on_event=on_event,
        on_finish=on_finish,
    )


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
    err.print(f"results: {folder}/")
    if summary.status != "succeeded":
        raise SystemExit(1)


# -- personas, status, results -----------------------------------------------------------
@cli.command()
def personas() -> None:
    """List the personas of prompts/: name, description, tools, model, workspace."""
    table = Table("name", "description", "tools", "model", "workspace")
    for p in load_personas(settings().prompts_dir).values():
        tools = ", ".join(p.tools) if p.tools is not None else "all"
        table.add_row(p.name, p.description, tools, p.model or "inherit", p.workspace or "-")
    out.print(table)


@cli.command()
@click.argument("run_id", required=False)
def status(run_id: str | None) -> None:
    """Show a run's tasks (the latest run without RUN_ID): status, worker, time, tokens, cost."""
    cfg = settings()
    queue = rq_queue(cfg) if cfg.queue == "rq" else None
    run_id = run_id or (queue and queue.latest_run()) or latest_run_id(cfg)
    events, summary = (queue.events(run_id), queue.summary(run_id)) if queue else ([], None)
    if not events:  # embedded, or expired from Redis: the run folder has it all
        store = RunStore.open(cfg.results_dir, run_id)
        events, summary = store.events(), store.summary()
    print_status(run_id, events, summary)


def print_status(run_id: str, events: list[Event], summary: RunSummary | None) -> None:
    """The task table of a run and its overall state, on stdout."""
    table = Table("task", "persona", "status", "worker", "seconds", "tokens", "cost")
    for task_id, s in task_states(events).items():
        table.add_row(
            task_id,
            s.get("persona", ""),
            s["status"],
            s.get("worker", ""),
            f"{s['duration_ms'] / 1000:.1f}" if "duration_ms" in s else "",
            f"{s['tokens']:,}" if "tokens" in s else "",
            money(s["cost_usd"]) if "cost_usd" in s else "",
        )
    out.print(table)
    failed = next((e.message for e in events if e.kind == "run_failed"), None)
    state = (
        f"{summary.status}, {usage_text(summary.usage_total)}"
        if summary
        else f"failed: {failed}"
        if failed
        else "running"
    )
    out.print(f"run {run_id}: {state}")


def latest_run_id(cfg: Settings) -> str:
    """The newest run under results/ (run ids sort by time).

    Raises:
        UserError: there is no run yet.
    """
    runs = sorted(p.parent.name for p in cfg.results_dir.glob("*/request.json"))
    if not runs:
        raise UserError(f"no run yet under {cfg.results_dir}/; start one with `crewbox run TEXT`")
    return runs[-1]


def task_states(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Each task's latest state from a run's events: status plus worker, usage, timing."""
    states: dict[str, dict[str, Any]] = {}
    for event in events:
        if not event.task_id or not event.kind.startswith("task_"):
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
    store = RunStore.open(settings().results_dir, run_id)
    summary = store.summary()
    if summary is None:
        raise UserError(
            f"run {run_id} has not finished; `crewbox status {run_id}` shows its progress"
        )
    if fmt == "json":
        click.echo(summary.model_dump_json(indent=2))
        return
    table = Table("artifact", "bytes", "sha256")
    for r in summary.tasks:
        for a in r.artifacts:
            table.add_row(
                f"{store.folder}/{r.persona}/{r.task_id}/{a.path}", f"{a.bytes:,}", a.sha256[:16]
            )
    out.print(table)
    out.print(f"answer: {summary.final_path}  ({summary.status})")


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
def submit(
    text: str | None,
    context_files: tuple[Path, ...],
    plan_file: Path | None,
    fmt: str,
    budget_usd: float | None,
    detach: bool,
) -> None:
    """Submit a request to the cluster, follow its progress, print the answer."""
    cfg = settings()
    queue = rq_queue(cfg)
    personas = load_personas(cfg.prompts_dir)
    request = build_request(text, context_files, plan_file, budget_usd, False, personas)
    queue.submit(request)
    if detach:
        click.echo(request.run_id)
        return
    err.print(f"submitted run {request.run_id} (Ctrl-C stops following; the run goes on)")
    follow_run(queue, request.run_id, ProgressPrinter(err))
    summary, final = queue.final(request.run_id)
    print_outcome(summary, fmt, final, cfg.results_dir / request.run_id)


def follow_run(queue: RQQueue, run_id: str, on_event: Callable[[Event], None]) -> None:
    """Pass the run's events to ``on_event`` until it finishes.

    Raises:
        CrewboxError: the run failed (its message, e.g. the PlanError, as the error line).
    """
    for event in queue.follow(run_id):
        if event is None:
            continue
        on_event(event)
        if event.kind == "run_finished":
            return
        if event.kind == "run_failed":
            raise CrewboxError(f"run {run_id} failed: {event.message}")


@cli.command("orchestrator")
def orchestrator_service() -> None:
    """Serve the requests queue: plan, dispatch, synthesize (the cluster's orchestrator)."""
    cfg = settings()
    setup_logging()
    queue = rq_queue(cfg)
    wait_for_redis(queue.redis)
    log = logging.getLogger("crewbox.orchestrator")

    def on_event(event: Event) -> None:
        queue.append_event(event)
        log.info(
            "run %s %s %s %s", event.run_id, event.kind, event.task_id or "", event.message[:120]
        )

    def handle(request: Request) -> None:
        orch = orchestrator(cfg, load_personas(cfg.prompts_dir), on_event, queue.finish, queue)
        try:
            orch.run(request)
        except CrewboxError as exc:
            log.warning("run %s failed: %s", request.run_id, exc)
        except Exception:  # a bug: the run_failed event is out; keep serving requests
            log.exception("run %s failed", request.run_id)

    log.info("orchestrator %s serving requests", default_worker_id())
    queue.serve_requests(handle, worker_id=default_worker_id())


@cli.command()
def workers() -> None:
    """Each persona's workers: alive, busy with which task, since when."""
    table = Table("queue", "worker", "host", "alive", "state", "task", "since")
    for w in sorted(rq_queue(settings()).workers(), key=lambda w: (w.queue, w.name)):
        since = w.since.strftime("%H:%M:%S") if w.since else ""
        table.add_row(
            w.queue, w.name, w.hostname, "yes" if w.alive else "no", w.state, w.task, since
        )
    out.print(table)


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
def worker(persona: str, burst: bool) -> None:
    """Serve one persona's queue (what `crewbox run` and the cluster start per persona)."""
    cfg = settings()
    setup_logging()
    runner = TaskRunner(
        cfg,
        check_persona(load_personas(cfg.prompts_dir), persona),
        make_client(cfg),
        default_worker_id(),
    )
    stop = stop_on_signals()
    logging.getLogger("crewbox.worker").info("worker %s serving %s", runner.worker_id, persona)
    make_queue(cfg).serve(persona, runner, worker_id=runner.worker_id, burst=burst, stop=stop)


def setup_logging() -> None:
    """Log lines ``time level logger: message`` on stderr (CREWBOX_LOG_LEVEL, default INFO)."""
    logging.basicConfig(
        level=os.environ.get("CREWBOX_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "anthropic", "openai", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
