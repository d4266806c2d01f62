"""What a request may hold so that every call of its run fits the model's context window.

Each task's call carries the request's text, its shared context (every context file) and
the task's instructions, besides the persona's prompt, the tools and the turns. A request
whose part cannot fit (Settings.request_tokens_limit, counted CHARS_PER_TOKEN characters a
token) is refused before any call: sending it would fail, or pay for a truncated context,
on every call of the run.
"""

from __future__ import annotations

from crewbox.budget import CHARS_PER_TOKEN
from crewbox.config import Settings
from crewbox.errors import UserError
from crewbox.models import Request


def request_chars(request: Request) -> int:
    """Characters a request brings into its largest task call: text, shared context and
    the longest instructions of its plan (0 without a plan)."""
    instructions = (
        max((len(t.instructions) for t in request.plan.tasks), default=0) if request.plan else 0
    )
    return len(request.text) + len(request.shared_context()) + instructions


def check_request_size(request: Request, settings: Settings, model: str | None = None) -> None:
    """Refuse a request whose text, context files and instructions cannot fit the model.

    ``model``: named in the error (default: the settings' default model).

    Raises:
        UserError: too large; the message gives its size, the limit and the largest part.
    """
    limit_chars = settings.request_tokens_limit() * CHARS_PER_TOKEN
    size = request_chars(request)
    if size <= limit_chars:
        return
    parts = {"the request text": len(request.text)}
    parts.update({f"context file {f.name}": len(f.content) for f in request.context_files})
    if request.plan:
        longest = max(request.plan.tasks, key=lambda t: len(t.instructions))
        parts[f"the instructions of task {longest.id}"] = len(longest.instructions)
    largest = max(parts, key=lambda k: parts[k])
    window = settings.context_window_tokens()
    raise UserError(
        f"the request is too large for {model or settings.default_model()}: {size:,} characters "
        f"(~{size // CHARS_PER_TOKEN:,} tokens; {largest} alone is {parts[largest]:,}), "
        f"at most {limit_chars:,} fit (~{limit_chars // CHARS_PER_TOKEN:,} tokens: half of its "
        f"{window:,}-token context window after the output); shorten or split it"
    )
