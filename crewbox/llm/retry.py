"""The one retry layer for LLM calls: crewbox's own, with tenacity.

Every client the factory builds is wrapped in :class:`RetryingLLM`, and the SDKs' own
retries are off (``max_retries=0``), so retries never multiply. crewbox retries rather
than the SDK because only crewbox knows the task's deadline: a call made inside a task
attempt is retried only while the attempt's ``timeout_s`` has time left, and each try gets
what is left as its own timeout.

Policy (``LLMAPIError.retryable``): connection errors, timeouts, 408, 409, 429, 5xx and 529
are retried up to ``max_retries`` times (``CREWBOX_LLM_MAX_RETRIES``, default 2), waiting
the server's ``retry-after`` when it gives one, else exponential backoff with full jitter
(``BACKOFF_INITIAL_S`` doubling to ``BACKOFF_MAX_S``). Anything else (400, 401, 403, 404,
413...) fails at once. A call that still fails after its retries fails the task, which the
orchestrator dispatches again only when the error is retryable (``CREWBOX_TASK_RETRIES``):
at most (1 + max_retries) x (1 + task_retries) calls for one turn of a task, 9 with the
defaults.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Unpack

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from crewbox.errors import LLMAPIError
from crewbox.llm.base import CallArgs, LLMClient, LLMResponse, deadline_of, time_left

log = logging.getLogger("crewbox.llm")

BACKOFF_INITIAL_S = 0.5
"""First backoff when the server gives no retry-after, in seconds."""
BACKOFF_MAX_S = 30.0
"""Longest backoff when the server gives no retry-after, in seconds."""
RETRY_AFTER_MAX_S = 300.0
"""Longest retry-after honoured, in seconds (a call with a deadline stops instead when the
wait would pass it)."""


def is_retryable(exc: BaseException) -> bool:
    """True for an LLMAPIError that trying again may fix (``LLMAPIError.retryable``)."""
    return isinstance(exc, LLMAPIError) and exc.retryable


class RetryingLLM:
    """An LLMClient that retries ``inner``'s retryable failures (see the module docstring).

    ``sleep`` waits between tries (seconds); tests pass a recorder.
    """

    def __init__(
        self,
        inner: LLMClient,
        max_retries: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.max_retries = max_retries
        self.sleep = sleep
        self._backoff = wait_exponential_jitter(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S)

    def complete(self, **call: Unpack[CallArgs]) -> LLMResponse:
        """``inner.complete`` with retries; ``timeout_s`` bounds all tries together.

        Raises:
            LLMAPIError: a failure that is not retryable, or the last one when the retries
                or the time ran out.
        """
        deadline_m = deadline_of(call.get("timeout_s"))

        def one_try() -> LLMResponse:
            this_try = call.copy()
            this_try["timeout_s"] = time_left(deadline_m)
            return self.inner.complete(**this_try)

        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=lambda state: self._stop(state, deadline_m),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(one_try)

    def _wait(self, state: RetryCallState) -> float:
        """The server's retry-after when it gave one, else jittered exponential backoff."""
        exc = state.outcome.exception() if state.outcome else None
        hint = exc.retry_after_s if isinstance(exc, LLMAPIError) else None
        if hint is not None:
            return float(min(max(hint, 0.0), RETRY_AFTER_MAX_S))
        return float(self._backoff(state))

    def _stop(self, state: RetryCallState, deadline_m: float | None) -> bool:
        """Stop after max_retries retries, or when the coming wait (tenacity computes it
        before asking) would pass the deadline."""
        if state.attempt_number > self.max_retries:
            return True
        return deadline_m is not None and time.monotonic() + state.upcoming_sleep >= deadline_m


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait_s = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "LLM call failed (%s); try %d again in %.1fs", exc, state.attempt_number + 1, wait_s
    )
