"""``python -m bench.engines``: what one task costs with each engine, builtin and claude-code.

One task (a Write, then a final answer) through the worker's TaskRunner against a fake
Messages endpoint over HTTP that answers at once, so the figures are the engine's own:

- ``engine_<e>_first_call_ms``: the task handed to the runner → the endpoint gets its first
  call (for claude-code: the gateway, the CLI's start-up and its first request);
- ``engine_<e>_task_ms``: the whole task (two calls, one Write);
- ``engine_builtin_worker_rss_mb``: the worker process's RSS after its tasks (VmRSS);
- ``engine_claude_code_cli_rss_mb``: the Claude Code CLI's peak RSS, on top of the worker
  (``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the measuring process has no other children).

Medians of ``--repeats`` tasks. Run by ``make bench`` in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import rss_mb
from crewbox.config import Settings
from crewbox.llm.factory import make_client
from crewbox.models import Task, TaskSpec
from crewbox.personas import load_personas
from tests.fakes.messages_server import FakeLLMServer, RecordedRequest, Reply
from worker.service import TaskRunner

ENGINES = ("builtin", "claude-code")
MODEL = "claude-sonnet-4-6"


def answer(request: RecordedRequest) -> Reply:
    """Write ``out.md`` on a conversation's first call, then end the turn."""
    messages = request.body.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    looped = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    write = {"type": "tool_use", "id": "toolu_1", "name": "Write",
             "input": {"file_path": "out.md", "content": "bench\n"}}  # fmt: skip
    content, stop = (
        ([{"type": "text", "text": "Done."}], "end_turn") if looped else ([write], "tool_use")
    )
    return {"id": "msg_b", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5}}  # fmt: skip


def one_task(engine: str, folder: Path) -> tuple[float, float]:
    """``(first_call_ms, task_ms)`` of one task with ``engine``.

    Raises:
        RuntimeError: the task did not succeed.
    """
    prompts = folder / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "bench.md").write_text(
        f"---\nname: bench\ndescription: d\ntools: Read, Write\nengine: {engine}\n---\nWrite.\n"
    )
    with FakeLLMServer(answer) as server:
        settings = Settings(
            provider="anthropic", anthropic_api_key="k", anthropic_base_url=server.url,
            model=MODEL, prompts_dir=prompts, results_dir=folder / "results",
            tasks_dir=folder / "tasks", workspaces_dir=folder, llm_max_retries=0,
        )  # fmt: skip
        persona = load_personas(prompts)["bench"]
        spec = TaskSpec(id="t", persona="bench", title="t", instructions="Write out.md.")
        task = Task(run_id=f"b{time.time_ns()}", spec=spec, request_text="bench")
        runner = TaskRunner(settings, persona, make_client(settings, persona="bench"), "bench:1")
        started = time.monotonic()
        first: list[float] = []
        original = server._take

        def timed(request: RecordedRequest) -> Any:
            first.append(time.monotonic())
            return original(request)

        server._take = timed  # type: ignore[method-assign]
        result = runner(task, lambda e: None)
        ended = time.monotonic()
    if result is None or result.status != "succeeded":
        raise RuntimeError(f"{engine}: the task did not succeed: {result and result.error}")
    return (first[0] - started) * 1000, (ended - started) * 1000


def measure(repeats: int) -> dict[str, Any]:
    """Every figure of the module docstring, in this process."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crewbox-bench-engines-") as tmp:
        for engine in ENGINES:
            runs = [one_task(engine, Path(tmp)) for _ in range(repeats)]
            key = engine.replace("-", "_")
            figures[f"engine_{key}_first_call_ms"] = statistics.median(r[0] for r in runs)
            figures[f"engine_{key}_task_ms"] = statistics.median(r[1] for r in runs)
            if engine == "builtin":
                figures["engine_builtin_worker_rss_mb"] = rss_mb(os.getpid())
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    figures["engine_claude_code_cli_rss_mb"] = peak_kib / 1024
    return figures


def engine_figures(repeats: int = 3) -> dict[str, Any]:
    """:func:`measure` in a fresh process (its children are only the CLIs).

    Raises:
        RuntimeError: the measuring process failed (its stderr's end in the message).
    """
    done = subprocess.run(
        [sys.executable, "-m", "bench.engines", "--json", "--repeats", str(repeats)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.engines failed: {done.stderr[-400:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    """Print the figures (a table, or one JSON line with ``--json``)."""
    p = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__)
    p.add_argument("--repeats", type=int, default=3, help="tasks per engine (3)")
    p.add_argument("--json", action="store_true", help="one JSON line")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    figures = measure(args.repeats)
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"| {key} | {value:.1f} |" if value is not None else f"| {key} | n/a |")


if __name__ == "__main__":
    main()
