"""Bash: run a shell command in the task's output folder (Claude Code's Bash tool).

This tool is NOT a filesystem sandbox: the command runs with the worker's own rights and can
read or write anything the worker process can. Only its working directory is the output
folder. It inherits only a few harmless environment variables (ENV_PASSED), never a key or
a secret path; in the cluster the worker has dropped the rights to read its secret files
before any tool runs (crewbox.privileges). There the container is the sandbox (read-only
root filesystem, only the persona's workspace mounted, no capabilities); that is why
embedded mode (``crewbox run``, no container around the worker) keeps Bash off unless the
user asks for it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from pydantic import Field

from crewbox.errors import ToolError
from worker.tools.base import BaseTool, ToolInput
from worker.tools.sandbox import Sandbox

DEFAULT_TIMEOUT_MS = 120_000
"""Timeout of a command when the call gives none (milliseconds)."""

MAX_TIMEOUT_MS = 600_000
"""Larger ``timeout`` values are lowered to this (milliseconds)."""

MAX_OUTPUT_CHARS = 30_000
"""Longer output keeps its first and last half of this many characters."""

_KEEP_BYTES = 4 * MAX_OUTPUT_CHARS
"""Bytes kept from each end of the output while the command runs (bounds memory)."""

ENV_PASSED = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR", "USER", "LOGNAME")
"""Variables a command inherits from the worker (and every ``LC_*``); nothing else, so no
credential, ``CREWBOX_*`` setting or secret path reaches it."""

_READ_CHUNK_BYTES = 65_536
_REAP_TIMEOUT_S = 5.0


class BashInput(ToolInput):
    """Bash's parameters (Claude Code's names)."""

    command: str = Field(description="The command to execute")
    timeout: int = Field(
        default=DEFAULT_TIMEOUT_MS,
        ge=1,
        description=f"Optional timeout in milliseconds (max {MAX_TIMEOUT_MS})",
    )
    description: str | None = Field(
        default=None,
        description="Clear, concise description of what this command does in 5-10 words",
    )


_SEPARATORS = re.compile(r"&&|\|\||[;|\n&]")
"""Where a command line holds several commands: each must match a rule."""

_SUBSTITUTION = ("`", "$(", "<(", ">(")
"""Shell forms that run a command inside another; never allowed under rules."""


def rule_matches(command: str, rule: str) -> bool:
    """Whether one simple ``command`` matches Claude Code permission ``rule``: ``prefix:*``
    matches the prefix alone or followed by a space and anything; otherwise the rule is a
    glob (``*`` any text) over the whole command."""
    if rule.endswith(":*"):
        prefix = rule[:-2].strip()
        return command == prefix or command.startswith(prefix + " ")
    return fnmatch.fnmatchcase(command, rule)


def command_allowed(command: str, rules: list[str]) -> bool:
    """Whether every command of the line ``command`` (split at ``&&``, ``||``, ``;``, ``|``,
    ``&`` and newlines) matches one of ``rules``; command substitutions are refused."""
    if any(form in command for form in _SUBSTITUTION):
        return False
    parts = [part.strip() for part in _SEPARATORS.split(command)]
    commands = [part for part in parts if part]
    return bool(commands) and all(any(rule_matches(c, r) for r in rules) for c in commands)


class BashTool(BaseTool[BashInput]):
    """Bash(command, timeout?, description?): run ``bash -c command`` in ``sandbox.cwd``.

    ``timeout`` is in milliseconds (default ``DEFAULT_TIMEOUT_MS``, capped at
    ``MAX_TIMEOUT_MS``); ``description`` is only for logs. Returns stdout and stderr
    interleaved (cut in the middle beyond ``MAX_OUTPUT_CHARS``), ``"(no output)"`` when
    empty, plus a last line ``"Exit code: <n>"`` when the command failed.

    The call returns when the command's output closes: a background job must redirect its
    output (``server > log 2>&1 &``) or it counts toward the timeout.

    ``rules``: the persona's Claude Code permission rules (``Bash(npm test:*)`` gives
    ``npm test:*``); a command line none of them allows is refused with a ToolError the model
    sees. None or empty: any command.

    Raises ToolError when the command runs past its timeout (its whole process group is
    killed) or when bash cannot start.
    Not a filesystem sandbox: see the module docstring.
    """

    name = "Bash"
    description = (
        "Executes a bash command in the working directory (your output folder) and "
        "returns its output and exit code. Optional timeout in milliseconds "
        f"(default {DEFAULT_TIMEOUT_MS}, max {MAX_TIMEOUT_MS})."
    )
    input_model = BashInput

    def __init__(self, rules: list[str] | None = None) -> None:
        self.rules = rules or []
        if self.rules:
            allowed = (
                f"{self.description} Only these commands are allowed: {', '.join(self.rules)}."
            )
            self.definition = self.definition.model_copy(update={"description": allowed})

    def run(self, input: BashInput, sandbox: Sandbox) -> str:
        """Run the command; see the class docstring.

        Raises:
            ToolError: the persona's rules (``Bash(npm test:*)``) do not allow the command.
        """
        if self.rules and not command_allowed(input.command, self.rules):
            raise ToolError(
                f"Bash: command not allowed by this persona's rules ({', '.join(self.rules)}): "
                f"{input.command[:200]}"
            )
        timeout_ms = min(input.timeout, MAX_TIMEOUT_MS)
        output, exit_code = run_command(input.command, sandbox.cwd, timeout_ms)
        text = output if output.strip() else "(no output)"
        return text if exit_code == 0 else f"{text.rstrip()}\nExit code: {exit_code}"


def run_command(command: str, cwd: Path, timeout_ms: int) -> tuple[str, int]:
    """Run ``bash -c command`` in ``cwd``, stdin empty; return (output, exit code).

    The output is stdout and stderr interleaved, decoded as UTF-8 (bad bytes replaced), cut
    in the middle beyond ``MAX_OUTPUT_CHARS``. A negative exit code means killed by signal.

    Raises:
        ToolError: bash could not start, or the command ran past ``timeout_ms`` (then its
            process group is killed).
    """
    try:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=tool_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError(f"cannot start bash in {cwd}: {exc}") from exc
    with process:
        capture = _Capture(_KEEP_BYTES)
        assert process.stdout is not None
        finished = _pump(process.stdout, capture, time.monotonic() + timeout_ms / 1000)
        if not finished or _wait(process, timeout_ms) is None:
            _kill_group(process)
            raise ToolError(
                f"command timed out after {timeout_ms} ms and was killed; "
                "pass a larger timeout (ms) or make the command faster"
            )
        return capture.text(MAX_OUTPUT_CHARS), process.returncode


def _pump(stream: IO[bytes], capture: _Capture, deadline: float) -> bool:
    """Read ``stream`` into ``capture`` until EOF (True) or ``deadline`` (False)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            chunk = os.read(stream.fileno(), _READ_CHUNK_BYTES)
            if not chunk:
                return True
            capture.add(chunk)
    return False


def tool_environment() -> dict[str, str]:
    """The environment of a Bash command: ENV_PASSED and ``LC_*`` of the worker's own."""
    return {k: v for k, v in os.environ.items() if k in ENV_PASSED or k.startswith("LC_")}


def _wait(process: subprocess.Popen[bytes], timeout_ms: int) -> int | None:
    """Wait for the exit after EOF (output closed); None when it does not come in time."""
    try:
        return process.wait(timeout=min(timeout_ms / 1000, _REAP_TIMEOUT_S))
    except subprocess.TimeoutExpired:
        return None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


class _Capture:
    """The first and last ``keep_bytes`` of a byte stream, and its total length."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self.head = bytearray()
        self.tail = bytearray()
        self.total_bytes = 0

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        room = self.keep_bytes - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        del self.tail[: -self.keep_bytes]

    def text(self, max_chars: int) -> str:
        """Decoded output, cut in the middle to at most ``max_chars`` (plus a note)."""
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        dropped = self.total_bytes - len(self.head) - len(self.tail)
        whole = head + tail
        if dropped == 0 and len(whole) <= max_chars:
            return whole
        if dropped == 0:
            head, tail = whole, whole
        half = max_chars // 2
        note = f"\n... [output truncated: {self.total_bytes} bytes in all; middle left out] ...\n"
        return head[:half] + note + tail[-half:]
