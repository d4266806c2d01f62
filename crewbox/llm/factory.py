"""Build the LLM client the settings ask for (``CREWBOX_PROVIDER``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from crewbox.config import Settings
from crewbox.errors import ConfigError
from crewbox.llm.base import LLMClient
from crewbox.llm.limiter import (
    AIMDLimiter,
    FileLimitStore,
    LimitedLLM,
    LimitPolicy,
    LimitStore,
    RedisLimitStore,
    credential_key,
    limiter_key,
)
from crewbox.llm.retry import RetryingLLM
from crewbox.models import ConcurrencyChange
from crewbox.telemetry import TracedLLM

if TYPE_CHECKING:
    import redis


def _anthropic_client(settings: Settings) -> LLMClient:
    from crewbox.llm.anthropic import AnthropicClient

    key = settings.anthropic_key()
    if not key:
        raise ConfigError(
            "provider anthropic needs an API key: set ANTHROPIC_API_KEY or CREWBOX_PROVIDER=openai"
        )
    return AnthropicClient(
        api_key=key,
        model=settings.model,
        base_url=settings.anthropic_base_url,
        timeout_s=settings.llm_timeout_s,
        effort=settings.effort,
    )


def _openai_client(settings: Settings) -> LLMClient:
    from crewbox.llm.openai import OpenAIClient

    return OpenAIClient(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value(),
        model=settings.llm_model,
        timeout_s=settings.llm_timeout_s,
    )


def _scripted_client(settings: Settings) -> LLMClient:
    from crewbox.testing import ScriptedLLM

    if settings.script_path is None:
        raise ConfigError("provider scripted needs a script: set CREWBOX_SCRIPT_PATH")
    return ScriptedLLM.from_file(settings.script_path, record_dir=settings.script_record_dir)


def limit_store(settings: Settings, connection: redis.Redis | None = None) -> LimitStore:
    """Where the credentials' concurrency limits are shared: Redis in the cluster (through
    ``connection``, else a service connection of its own), files under ``tasks/_limits/``
    embedded."""
    if settings.queue == "rq":
        return RedisLimitStore(connection or service_connection(settings))
    return FileLimitStore(settings.tasks_dir / "_limits")


def service_connection(settings: Settings) -> redis.Redis:
    """A long-lived service's Redis connection (retries that ride out a Redis restart)."""
    from crewbox.redis_client import SERVICE_RETRIES, connect

    return connect(settings, SERVICE_RETRIES)


def credential_of(settings: Settings) -> str:
    """The hashed name of the credential the settings call the LLM with."""
    provider = settings.resolved_provider()
    if provider == "anthropic":
        endpoint = settings.anthropic_base_url or "https://api.anthropic.com"
        return credential_key(provider, endpoint, settings.anthropic_key() or "")
    if provider == "openai":
        return credential_key(
            provider, settings.llm_base_url, settings.llm_api_key.get_secret_value()
        )
    return credential_key(provider, str(settings.script_path), "")


def limit_policy(settings: Settings, persona: str) -> LimitPolicy:
    """The limiter's numbers for ``persona``'s calls: at most ``llm_max_concurrency`` in
    flight, and at most ``llm_persona_concurrency`` for a persona on an OpenAI-compatible
    server (the local model: a few slots shared by every persona; the orchestrator is not
    capped so)."""
    max_limit = settings.llm_max_concurrency
    if settings.resolved_provider() == "openai" and persona != "orchestrator":
        max_limit = min(max_limit, settings.llm_persona_concurrency)
    return LimitPolicy(
        max_limit=max_limit,
        failures_to_open=settings.llm_circuit_failures,
        cooldown_s=settings.llm_circuit_cooldown_s,
        lease_s=settings.llm_timeout_s + 60,
    )


def make_client(
    settings: Settings,
    on_limit_change: Callable[[ConcurrencyChange], None] | None = None,
    connection: redis.Redis | None = None,
    persona: str = "orchestrator",
) -> LLMClient:
    """The :class:`~crewbox.llm.base.LLMClient` for ``settings.resolved_provider()``.

    - ``anthropic``: :class:`~crewbox.llm.anthropic.AnthropicClient` with
      ``settings.anthropic_key()``, ``anthropic_base_url`` and ``model``;
    - ``openai``: :class:`~crewbox.llm.openai.OpenAIClient` with ``llm_base_url``,
      ``llm_api_key`` and ``llm_model``;
    - ``scripted``: ``crewbox.testing.ScriptedLLM`` replaying ``script_path``
      (recording calls to ``script_record_dir``).

    Each is wrapped in :class:`~crewbox.llm.limiter.LimitedLLM` (``persona``'s AIMD
    concurrency limit and circuit breaker for the credential, :func:`limit_policy`, shared by
    the persona's processes through :func:`limit_store`; its changes go to
    ``on_limit_change``), then in :class:`~crewbox.llm.retry.RetryingLLM` with
    ``llm_max_retries`` (the one retry layer: the SDKs' own retries are off), so every try
    takes a slot, then in :class:`~crewbox.telemetry.TracedLLM` (a ``chat {model}`` span per
    call). Both real clients use ``llm_timeout_s``.

    Raises:
        ConfigError: anthropic without a key, or scripted without ``script_path``.
    """
    provider = settings.resolved_provider()
    if provider == "anthropic":
        client = _anthropic_client(settings)
    elif provider == "openai":
        client = _openai_client(settings)
    else:
        client = _scripted_client(settings)
    key = limiter_key(persona, credential_of(settings))
    limiter = AIMDLimiter(limit_store(settings, connection), key, limit_policy(settings, persona))
    retrying = RetryingLLM(LimitedLLM(client, limiter, on_limit_change), settings.llm_max_retries)
    return TracedLLM(retrying, provider)
