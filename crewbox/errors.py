"""One exception hierarchy for crewbox, split by who is at fault.

- :class:`UserError`: bad input from the user (a plan file, a persona file, a CLI flag).
  The CLI prints its message as one line and exits with status 2.
- :class:`ModelBehaviorError`: the LLM did something the contract forbids (no plan, bad JSON).
- :class:`LLMAPIError`: the provider's API failed (HTTP status, rate limit, network).
- :class:`ToolError`: a tool call was refused or failed; its message goes back to the model
  as an ``is_error`` tool result and the task goes on.

The split follows pydantic-ai's errors (user error vs model behaviour vs API error).
"""

from __future__ import annotations


class CrewboxError(Exception):
    """Base of every error crewbox raises on purpose; its message is one readable line."""

    exit_code = 1


class UserError(CrewboxError):
    """Input the user gave is wrong; the message says what and how to fix it (exit 2)."""

    exit_code = 2


class ConfigError(UserError):
    """A setting (environment variable, flag) is missing or invalid."""


class PersonaError(UserError):
    """A persona file under prompts/ is missing, unreadable or lacks a required key."""


class PlanError(UserError):
    """A plan is invalid (unknown persona, cycle, duplicate id...) and nothing was dispatched.

    Attributes:
        problems: every validation problem found, one short sentence each.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class RunNotFoundError(UserError):
    """No run with the given run_id exists under results/ (or in Redis)."""


class ModelBehaviorError(CrewboxError):
    """The model broke the contract (e.g. answered without calling ``submit_plan``)."""


RETRYABLE_STATUS = frozenset({408, 409, 429, 529})
"""HTTP statuses worth another try besides every 5xx: timeout, conflict, rate limit and
Anthropic's "overloaded" (529), as the Anthropic SDK's own retry rule has them. Every other
4xx (400, 401, 403, 404, 413...) fails the same way again."""


class LLMAPIError(CrewboxError):
    """The LLM provider's API failed.

    Attributes:
        status_code: HTTP status, or None for a network error or timeout.
        retry_after_s: the server's Retry-After hint in seconds, when it gave one.
    """

    @property
    def retryable(self) -> bool:
        """True when trying again may succeed: no status (connection error, timeout), a
        5xx, or one of RETRYABLE_STATUS."""
        code = self.status_code
        return code is None or code >= 500 or code in RETRYABLE_STATUS

    def __init__(
        self, message: str, status_code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class BudgetExceededError(CrewboxError):
    """An LLM call was not made: its estimated cost could take a budget past its limit.

    Attributes:
        scope: the budget reached: ``run`` or ``persona:<name>``.
    """

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class ScriptExhaustedError(CrewboxError):
    """ScriptedLLM received a call that no remaining scripted step matches."""


class ToolError(CrewboxError):
    """A tool call failed or was refused; shown to the model as an error tool result."""


class QueueError(CrewboxError):
    """The task queue backend failed (Redis unreachable, a queue folder unwritable...)."""


class ArtifactError(CrewboxError):
    """Artifacts of a task are too large to carry, or their sha256 does not match."""
