"""What prompt caching saves on the recital request: the cache-read share of input tokens.

Runs `crewbox run --plan workflows/spring-recital.yaml` (embedded, the real Anthropic SDK)
against a fake Messages endpoint that bills every request as Anthropic's prompt cache does
(tests/fakes/prompt_cache.py: prefixes up to each ``cache_control`` breakpoint, the
20-block lookback, the 1,024-token minimum). Each task's model explores as an agent does:
Glob its workspace, Read up to three files, Write its deliverable, then a summary. Prints
the split of the prompt tokens and what the run would have cost with no caching at all.

The figure measures where crewbox puts its breakpoints, under the documented rules; a run
on the real API (with a key: `crewbox run --plan workflows/spring-recital.yaml`, then
`cache_read_tokens` over all prompt tokens in summary.json) measures the API itself.

    .venv/bin/python -m bench.caching [--json PATH]   (make bench-caching)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from crewbox.llm.pricing import price_for
from crewbox.models import RunSummary
from tests.conftest import ROOT, crewbox_env, run_crewbox
from tests.fakes.messages_server import FakeLLMServer, RecordedRequest, Reply
from tests.fakes.prompt_cache import CHARS_PER_TOKEN, PromptCache

MODEL = "claude-sonnet-4-6"
WORKSPACE = re.compile(r"Your workspace with reference material is (\S+?)\.?\s")
DELIVERABLE = "\n".join(
    f"- Point {i}: a line of the deliverable, as a model writes it." for i in range(60)
)


class AgentResponder:
    """Answers each Messages request as an agent would at that turn; bills through the
    cache model."""

    def __init__(self, cache: PromptCache) -> None:
        self.cache = cache
        self.count = 0
        self.system_only = PromptCache()
        """The same requests billed with the conversation's breakpoint taken out: what
        caching the system prefix alone (crewbox before it cached the latest turn) gives."""
        self.system_only_tokens = {"input": 0, "cache_write": 0, "cache_read": 0, "output": 0}

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.body
        self.count += 1
        content, stop = self.turn(body)
        billed = self.cache.bill(body)
        output = math.ceil(len(json.dumps(content)) / CHARS_PER_TOKEN)
        alt = self.system_only.bill(without_message_breakpoints(body))
        for key, value in (("input", alt.input_tokens), ("cache_write", alt.cache_write_tokens),
                           ("cache_read", alt.cache_read_tokens), ("output", output)):  # fmt: skip
            self.system_only_tokens[key] += value
        usage = {
            "input_tokens": billed.input_tokens,
            "output_tokens": output,
            "cache_creation_input_tokens": billed.cache_write_tokens,
            "cache_read_input_tokens": billed.cache_read_tokens,
        }
        return {"id": f"msg_{self.count}", "type": "message", "role": "assistant",
                "model": body.get("model", MODEL), "content": content, "stop_reason": stop,
                "stop_sequence": None, "usage": usage}  # fmt: skip

    def turn(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The reply's content blocks and stop reason, by the turn of the conversation."""
        if not body.get("tools"):
            return [
                text("The recital plan: choreography, tickets, campaign, newsletter.")
            ], "end_turn"
        messages = body["messages"]
        turn = sum(m["role"] == "assistant" for m in messages)
        first = json.dumps(messages[0]["content"])
        found = WORKSPACE.search(json.loads(first) if first.startswith('"') else first)
        if turn == 0 and found:
            return [use("Glob", {"pattern": "**/*", "path": found.group(1)})], "tool_use"
        if turn <= 1 and found:
            files = [line for line in listing(messages[-1]).splitlines() if line.startswith("/")]
            return [use("Read", {"file_path": f}) for f in files[:3]] or [
                text("no files")
            ], "tool_use"
        if turn <= 2:
            return [
                use("Write", {"file_path": "deliverable.md", "content": DELIVERABLE})
            ], "tool_use"
        return [text("Wrote deliverable.md: the piece, its plan and its schedule.")], "end_turn"


def without_message_breakpoints(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``cache_control`` left only on tools and system blocks."""
    messages = []
    for message in body.get("messages", []):
        content = message["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in b.items() if k != "cache_control"} for b in content]
        messages.append({**message, "content": content})
    return {**body, "messages": messages}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


_uses = iter(range(1, 1_000_000))


def use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{next(_uses)}", "name": name, "input": tool_input}


def listing(message: dict[str, Any]) -> str:
    """The text of the first tool result in a user message."""
    for block in message.get("content", []):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def run_recital(server_url: str, folder: Path) -> RunSummary:
    """`crewbox run --plan workflows/spring-recital.yaml` against the fake endpoint."""
    env = crewbox_env(
        folder, CREWBOX_PROVIDER="anthropic", ANTHROPIC_API_KEY="bench",
        ANTHROPIC_BASE_URL=server_url, CREWBOX_MODEL=MODEL, NO_PROXY="127.0.0.1,localhost",
    )  # fmt: skip
    env.pop("HTTPS_PROXY", None)
    plan = ROOT / "workflows" / "spring-recital.yaml"
    proc = run_crewbox(["run", "--plan", str(plan)], env, folder, timeout_s=600)
    if proc.returncode != 0:
        raise SystemExit(f"the recital run failed: {proc.stderr[-2000:]}")
    (run_dir,) = [p for p in (folder / "results").iterdir() if p.is_dir()]
    return RunSummary.model_validate_json((run_dir / "summary.json").read_text())


def cost_usd(tokens: dict[str, int]) -> Decimal:
    """What ``tokens`` (input, cache_write, cache_read, output) cost on MODEL."""
    price = price_for(MODEL)
    assert price is not None
    per_mtok = {
        "input": price.input_usd_per_mtok,
        "cache_write": price.cache_write_usd_per_mtok,
        "cache_read": price.cache_read_usd_per_mtok,
        "output": price.output_usd_per_mtok,
    }
    return sum((Decimal(n) * per_mtok[k] for k, n in tokens.items()), Decimal(0)) / 1_000_000


def figures(summary: RunSummary, system_only: dict[str, int]) -> dict[str, Any]:
    """The prompt split and cache-read share of the run, and its cost next to the same
    requests with the system prefix cached alone and with no caching."""
    u = summary.usage_total
    prompt = u.input_tokens + u.cache_write_tokens + u.cache_read_tokens
    uncached = cost_usd({"input": prompt, "output": u.output_tokens})
    alt_prompt = sum(v for k, v in system_only.items() if k != "output")
    return {
        "calls": u.calls,
        "prompt_tokens": prompt,
        "input_tokens": u.input_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_read_share": round(u.cache_read_tokens / prompt, 3) if prompt else 0.0,
        "cache_read_share_system_only": round(system_only["cache_read"] / alt_prompt, 3),
        "cost_usd": float(u.cost_usd),
        "cost_system_only_usd": float(cost_usd(system_only)),
        "cost_without_caching_usd": float(uncached),
        "saved_share": round(float(1 - u.cost_usd / uncached), 3) if uncached else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    responder = AgentResponder(PromptCache())
    with FakeLLMServer(responder) as server, tempfile.TemporaryDirectory() as tmp:
        result = figures(run_recital(server.url, Path(tmp)), responder.system_only_tokens)
    print("| recital (spring-recital.yaml) | value |\n| --- | ---: |")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
