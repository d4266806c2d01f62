"""The ``claude-code`` engine: the real Claude Code CLI runs the task, metered by crewbox.

The CLI is the one the ``claude-agent-sdk`` wheel carries (``pip install
'crewbox[claude-code]'``). It is started directly rather than through the SDK's ``query()``:
the SDK passes the worker's whole environment on to the CLI (the key with it, where the
worker has one in its environment) and starts it in the worker's process group, and crewbox
needs neither. What the CLI gets (code.claude.com "CLI reference", "Environment variables"):

- ``-p`` with the task message on stdin, ``--output-format stream-json --verbose`` (one JSON
  event a line: tool calls are logged as they come; the last event is the result);
- the persona: ``--system-prompt`` (its prompt and the run's shared context), ``--model``,
  ``--max-turns``, ``--effort``, ``--tools``/``--allowedTools``/``--disallowedTools`` from its
  front matter as written (Claude Code's own tool names, rules included; Bash only when
  allowed, as builtin), ``--agents`` (its sub-agents), ``--add-dir`` (its workspace);
  ``--permission-mode dontAsk``: tools the persona lists run, anything else is refused
  without asking (``bypassPermissions`` is refused as root);
- an environment of its own, nothing inherited but PATH, locale and proxy settings: the
  gateway (worker.gateway) as ``ANTHROPIC_BASE_URL``, a per-attempt token as
  ``ANTHROPIC_API_KEY``, ``CLAUDE_CODE_MAX_RETRIES=0`` (crewbox's retry layer is the one),
  ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``, ``DISABLE_TELEMETRY=1``, and a fresh
  ``HOME``/``CLAUDE_CONFIG_DIR`` per process (instances sharing ``~/.claude.json`` corrupt it);
- its own process group: a cancel or timeout sends SIGINT, then SIGTERM, then SIGKILL to it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from crewbox import telemetry
from crewbox.errors import ConfigError
from crewbox.personas import Persona, parse_tools, read_front_matter, tool_name
from worker.agent import AgentOutcome, system_blocks, task_message
from worker.engines.base import EngineRun
from worker.gateway import MessagesGateway

log = logging.getLogger("crewbox.worker.claude_code")

DEFAULT_TOOLS = (
    "Read",
    "Write",
    "Edit",
    "Glob",
    "Grep",
    "Bash",
    "Agent",
    "WebFetch",
    "WebSearch",
    "NotebookEdit",
    "TodoWrite",
)
"""What a persona without a ``tools`` list may use: Claude Code's built-in tools that act
without a terminal (``Bash`` only where allowed)."""

PASSED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "TRACEPARENT",
)
"""The only variables of the worker's environment the CLI gets (none holds a secret)."""

QUIET_ENV = {
    "CLAUDE_CODE_MAX_RETRIES": "0",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
"""Claude Code's retries, telemetry, error reporting and updates off; the gateway reached
directly, never through a proxy (code.claude.com "Environment variables")."""

END_GRACE_S = 3.0
"""How long the CLI gets after SIGINT, then after SIGTERM, before the next signal."""

WAIT_STEP_S = 0.05
"""How often the engine looks at the stop flag and the deadline while the CLI runs."""


def cli_path() -> Path:
    """The Claude Code CLI: the one in the ``claude-agent-sdk`` wheel, else ``claude`` on
    PATH.

    Raises:
        ConfigError: neither is there.
    """
    spec = importlib.util.find_spec("claude_agent_sdk")  # found, not imported (~0.5 s)
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "_bundled" / "claude"
        if bundled.is_file():
            return bundled
    found = shutil.which("claude")
    if found is None:
        raise ConfigError(
            "engine claude-code needs the Claude Code CLI: pip install 'crewbox[claude-code]' "
            "(or set CREWBOX_ENGINE=builtin)"
        )
    return Path(found)


@dataclass
class ToolChoice:
    """The CLI's tool flags for a persona: ``tools`` (available), ``allowed`` (run without
    asking, rules included), ``disallowed``."""

    tools: list[str]
    allowed: list[str]
    disallowed: list[str] = field(default_factory=list)


def raw_tools(persona: Persona) -> tuple[list[str] | None, list[str]]:
    """The persona's ``tools`` and ``disallowedTools`` as its file writes them (crewbox's
    loader drops the tools builtin lacks; Claude Code has them)."""
    if persona.path is None or not persona.path.is_file():
        return persona.tools, []
    meta, _, _ = read_front_matter(persona.path.read_text(encoding="utf-8"), str(persona.path))
    listed = parse_tools(meta.get("tools"), str(persona.path))
    return listed, parse_tools(meta.get("disallowedTools"), str(persona.path)) or []


READ_TOOLS = ("Read", "Glob", "Grep")
"""Tools whose bare entry becomes Read rules for the output folder and the workspace."""

EDIT_TOOLS = ("Write", "Edit", "NotebookEdit")
"""Tools whose bare entry becomes an Edit rule for the output folder (Claude Code's Edit
rules cover every tool that edits files)."""


def path_rule(tool: str, folder: Path) -> str:
    """A permission rule for ``folder`` and everything under it (``//`` marks an absolute
    path in Claude Code's rules, code.claude.com "Identity and Access Management")."""
    return f"{tool}(/{folder.as_posix().rstrip('/')}/**)"


def confined(entries: list[str], out_dir: Path, workspace: Path | None) -> list[str]:
    """``entries`` with bare file tools confined as builtin's sandbox confines them: reads
    to the output folder and the workspace, edits to the output folder (a tool outside
    them is refused under ``dontAsk``). Entries with a rule stay as written."""
    readable = [out_dir] + ([workspace] if workspace is not None else [])
    allowed: list[str] = []
    for entry in entries:
        if entry in READ_TOOLS:
            allowed += [path_rule("Read", folder) for folder in readable]
        elif entry in EDIT_TOOLS:
            allowed.append(path_rule("Edit", out_dir))
        else:
            allowed.append(entry)
    return list(dict.fromkeys(allowed))


def tool_choice(
    persona: Persona, allow_bash: bool, out_dir: Path, workspace: Path | None = None
) -> ToolChoice:
    """The tool flags for ``persona``; Bash only with ``allow_bash``; file tools confined
    (:func:`confined`)."""
    listed, denied = raw_tools(persona)
    entries = [("Agent" + t[4:] if tool_name(t) == "Task" else t) for t in listed or DEFAULT_TOOLS]
    if not allow_bash:
        entries = [t for t in entries if tool_name(t) != "Bash"]
        denied = [*denied, "Bash"]
    names = list(dict.fromkeys(tool_name(t) for t in entries))
    allowed = confined(entries, out_dir, workspace)
    return ToolChoice(tools=names, allowed=allowed, disallowed=list(dict.fromkeys(denied)))


def agents_json(subagents: dict[str, Persona]) -> str:
    """The persona's sub-agents as the CLI's ``--agents`` JSON."""
    agents: dict[str, dict[str, Any]] = {}
    for name, sub in subagents.items():
        entry: dict[str, Any] = {"description": sub.description, "prompt": sub.prompt}
        if sub.tools is not None:
            entry["tools"] = [tool_name(t) for t in sub.tools]
        if sub.model:
            entry["model"] = sub.model
        if sub.max_turns:
            entry["maxTurns"] = sub.max_turns
        if sub.effort:
            entry["effort"] = sub.effort
        agents[name] = entry
    return json.dumps(agents)


def cli_args(run: EngineRun, system_prompt: str) -> list[str]:
    """The CLI's arguments for ``run`` (the task message goes on stdin)."""
    choice = tool_choice(run.persona, run.allow_bash, run.out_dir, run.workspace)
    args = [str(cli_path()), "-p", "--output-format", "stream-json", "--verbose"]
    args += ["--system-prompt", system_prompt, "--model", run.model]
    args += ["--max-turns", str(run.max_turns), "--permission-mode", "dontAsk"]
    args += ["--setting-sources", "", "--strict-mcp-config", "--no-session-persistence"]
    args += ["--tools", ",".join(choice.tools)]
    if choice.allowed:
        args += ["--allowedTools", *choice.allowed]
    if choice.disallowed:
        args += ["--disallowedTools", *choice.disallowed]
    if run.persona.effort:
        args += ["--effort", run.persona.effort]
    if run.subagents:
        args += ["--agents", agents_json(run.subagents)]
    if run.workspace is not None:
        args += ["--add-dir", str(run.workspace)]
    return args


def cli_env(gateway: MessagesGateway, home: Path, deadline_m: float) -> dict[str, str]:
    """The CLI's whole environment: nothing secret, the gateway and its token, and the
    attempt's span as ``TRACEPARENT`` when tracing is on (crewbox.telemetry)."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(QUIET_ENV)
    left_ms = max(int((deadline_m - time.monotonic()) * 1000), 1000)
    env.update(
        HOME=str(home),
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        TMPDIR=str(home / "tmp"),
        ANTHROPIC_BASE_URL=gateway.url,
        ANTHROPIC_API_KEY=gateway.token,
        API_TIMEOUT_MS=str(left_ms),
    )
    if parent := telemetry.traceparent():
        env["TRACEPARENT"] = parent
    return env


@dataclass
class CliState:
    """What the CLI's stream-json said: its ``result`` event, and its last stderr lines."""

    result: dict[str, Any] | None = None
    last_text: str = ""
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=20))


def read_events(stream: IO[str], state: CliState, where: str) -> None:
    """Read the CLI's stream-json events from ``stream`` until it closes: log each tool
    call, keep the last assistant text and the result."""
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("type") == "result":
            state.result = event
        elif event.get("type") == "assistant":
            for block in (event.get("message") or {}).get("content") or []:
                if block.get("type") == "tool_use":
                    shown = json.dumps(block.get("input"))[:120]
                    log.info("%s: Claude Code calls %s %s", where, block.get("name"), shown)
                elif block.get("type") == "text" and block.get("text"):
                    state.last_text = block["text"]


def read_stderr(stream: IO[str], state: CliState) -> None:
    """Keep the last lines the CLI writes to stderr (for the error of a failed run)."""
    for line in stream:
        state.stderr.append(line.rstrip())


def end_group(proc: subprocess.Popen[str]) -> None:
    """End the CLI and everything it started: SIGINT (Claude Code's interrupt), then
    SIGTERM, then SIGKILL to its process group, END_GRACE_S apart."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=END_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what it left behind (background commands)


def supervise(proc: subprocess.Popen[str], run: EngineRun) -> str:
    """Wait for the CLI; end its group on cancel or deadline. Returns ``""`` when it ended
    by itself, ``cancelled`` or ``timeout`` otherwise."""
    while True:
        try:
            proc.wait(timeout=WAIT_STEP_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return ""
        except subprocess.TimeoutExpired:
            pass
        reason = "cancelled" if run.stop.is_set() else ""
        if not reason and time.monotonic() >= run.deadline_m:
            reason = "timeout"
        if reason:
            end_group(proc)
            return reason


def subagent_finder(subagents: dict[str, Persona]) -> Any:
    """``subagent_of(system_text)``: the sub-agent whose prompt a call's system prompt
    holds, None for the persona's own calls."""
    prompts = {name: sub.prompt.strip()[:400] for name, sub in subagents.items()}

    def subagent_of(system_text: str) -> str | None:
        for name, prompt in prompts.items():
            if prompt and prompt in system_text:
                return name
        return None

    return subagent_of


def run_claude_code(run: EngineRun) -> AgentOutcome:
    """Run ``run``'s task with the Claude Code CLI (see the module docstring).

    Raises:
        ConfigError: no CLI installed.
        LLMAPIError: a call failed at the provider and the CLI ended on it (as builtin
            raises it: the attempt fails, retryable or not).
    """
    task = run.task
    system = "\n\n".join(b.text for b in system_blocks(run.persona, task.context))
    message = task_message(task, run.out_dir, run.workspace)
    gateway = MessagesGateway(
        run.llm,
        run.on_call,
        run.map_model,
        run.deadline_m,
        effort=run.persona.effort,
        subagent_of=subagent_finder(run.subagents),
    )
    home = Path(tempfile.mkdtemp(prefix="crewbox-claude-"))
    (home / "tmp").mkdir()
    where = f"run {task.run_id} task {task.task_id}"
    state = CliState()
    try:
        with gateway:
            args = cli_args(run, system)
            proc = subprocess.Popen(
                args,
                cwd=run.out_dir,
                env=cli_env(gateway, home, run.deadline_m),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            assert proc.stdin and proc.stdout and proc.stderr
            readers = [
                threading.Thread(target=read_events, args=(proc.stdout, state, where)),
                threading.Thread(target=read_stderr, args=(proc.stderr, state)),
            ]
            for reader in readers:
                reader.start()
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(message)
                proc.stdin.close()
            try:
                reason = supervise(proc, run)
            except BaseException:  # the worker is going (Ctrl-C, SIGTERM): take the CLI along
                end_group(proc)
                raise
            for reader in readers:
                reader.join(timeout=5)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return outcome_of(run, gateway, state, reason, proc.returncode)


def outcome_of(
    run: EngineRun, gateway: MessagesGateway, state: CliState, reason: str, code: int | None
) -> AgentOutcome:
    """The AgentOutcome of a CLI run that ended (``reason``: see :func:`supervise`)."""
    result = state.result or {}
    outcome = AgentOutcome(
        text=str(result.get("result") or state.last_text or "").strip(),
        turns=int(result.get("num_turns") or 0),
    )
    if reason == "cancelled":
        outcome.error, outcome.cancelled = "cancelled: the run was cancelled", True
    elif reason == "timeout":
        outcome.error = run.timed_out or "timed out (timeout_s of the task)"
    elif gateway.budget_error is not None:
        outcome.error, outcome.budget_exceeded = str(gateway.budget_error), True
        outcome.budget_scope = gateway.budget_error.scope
    elif gateway.api_error is not None:
        raise gateway.api_error
    elif not result:
        tail = " | ".join(list(state.stderr)[-3:]) or "no output"
        outcome.error = f"Claude Code ended without a result (exit {code}): {tail}"
    elif result.get("subtype") == "error_max_turns":
        outcome.error = (
            f"stopped after {run.max_turns} turns (maxTurns, else CREWBOX_MAX_TURNS) "
            "without finishing"
        )
    elif result.get("is_error"):
        outcome.error = "Claude Code: " + " ".join(outcome.text.split())[:300]
    return outcome
