"""The synthesizer: every task's result → one answer (``final.md``).

The LLM sees each task's status and summary and excerpts of its text artifacts, cut to fit
``budget_tokens`` (estimated at 4 characters a token, the usual rule of thumb for English).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from crewbox.budget import CHARS_PER_TOKEN
from crewbox.llm.base import LLMClient, Message, SystemBlock
from crewbox.models import Request, Result, Usage
from crewbox.personas import Persona
from crewbox.store import file_inside


def artifact_excerpt(path: Path, max_chars: int) -> str | None:
    """The start of a text file, at most ``max_chars`` characters; None for binary files."""
    with path.open("rb") as fh:
        data = fh.read(max_chars * 4)
    if b"\x00" in data:
        return None
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= max_chars else text[:max_chars] + "\n[...]"


def results_digest(results: list[Result], run_folder: Path, budget_tokens: int) -> str:
    """Statuses, summaries and artifact excerpts of ``results`` within ``budget_tokens``:
    summaries take at most half of it (cut evenly), artifact excerpts share the rest.
    Only regular files inside ``run_folder`` are read, symlinks resolved: an artifact
    path that leads anywhere else is shown as not readable."""
    budget_chars = budget_tokens * CHARS_PER_TOKEN
    artifacts = sum(len(r.artifacts) for r in results) or 1
    summary_chars = max(200, budget_chars // (2 * max(len(results), 1)))
    summaries = "\n\n".join(result_header(r, summary_chars) for r in results)
    per_file = max(200, (budget_chars - len(summaries)) // artifacts)
    sections = []
    for result in results:
        sections.append(result_header(result, summary_chars))
        for artifact in result.artifacts:
            where = f"{result.persona}/{result.task_id}/{artifact.path}"
            shown = _excerpt(file_inside(run_folder, where), per_file)
            sections.append(f"Artifact {result.persona}/{result.task_id}/{artifact.path}:\n{shown}")
    return "\n\n".join(sections)


def _excerpt(path: Path | None, max_chars: int) -> str:
    if path is None:
        return "(not readable: not a file inside the run folder)"
    try:
        excerpt = artifact_excerpt(path, max_chars)
    except OSError as exc:
        return f"(not readable: {exc.strerror})"
    return "(binary file)" if excerpt is None else f"```\n{excerpt}\n```"


def result_header(result: Result, max_summary_chars: int | None = None) -> str:
    """One task's title, status, error and summary (cut at ``max_summary_chars``) as
    Markdown."""
    head = f"### {result.task_id} ({result.persona}): {result.title} — {result.status}"
    if result.error:
        head += f"\nError: {result.error}"
    summary = result.summary or "(no summary)"
    if max_summary_chars is not None and len(summary) > max_summary_chars:
        summary = summary[:max_summary_chars] + " [...]"
    return f"{head}\n\n{summary}"


def fallback_answer(request: Request, results: list[Result], reason: str) -> str:
    """``final.md`` without the LLM: the summaries as they are, and why."""
    body = "\n\n".join(result_header(r) for r in results) or "(no task ran)"
    return f"# {request.text}\n\n_Synthesis unavailable: {reason}_\n\n{body}\n"


class Synthesizer:
    """Writes the final answer from the results with the LLM."""

    def __init__(
        self, llm: LLMClient, prompt: Persona, *, model: str, max_tokens: int, budget_tokens: int
    ) -> None:
        self.llm = llm
        self.prompt = prompt
        self.model = model
        self.max_tokens = max_tokens
        self.budget_tokens = budget_tokens

    def synthesize(
        self,
        request: Request,
        results: list[Result],
        run_folder: Path,
        on_call: Callable[[Usage], None],
        llm: LLMClient | None = None,
    ) -> str:
        """The answer in Markdown; ``on_call`` receives the call's usage; ``llm``: the
        client for this run (e.g. behind its budget), None: the synthesizer's own.

        Raises:
            LLMAPIError: the provider failed (the caller falls back to :func:`fallback_answer`).
            BudgetExceededError: the run's budget cannot cover the call (the same fallback).
        """
        digest = results_digest(results, run_folder, self.budget_tokens)
        message = f"## Request\n\n{request.text}\n\n## Results\n\n{digest}"
        response = (llm or self.llm).complete(
            system=[SystemBlock(text=self.prompt.prompt, cache=True)],
            messages=[Message(role="user", content=message)],
            max_tokens=self.max_tokens,
            model=self.model,
        )
        on_call(response.usage)
        return response.text or fallback_answer(request, results, "the model returned no text")
