"""Settings, read from the environment (prefix ``CREWBOX_``) and ``.env`` via pydantic-settings.

Paths default to folders of the current directory (the project root), as in the layout of
docs/architecture.md; in a container they are set by the compose file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crewbox.models import MAX_TASKS

MiB = 1024 * 1024

CLAUDE_CONTEXT_TOKENS = 200_000
"""The context window of the Claude models crewbox uses, in tokens (until crewbox/llm has a
table of each model's capabilities to read it from)."""


class Settings(BaseSettings):
    """Every knob of crewbox; each field maps to ``CREWBOX_<FIELD>`` in the environment.

    ``provider``: ``auto`` picks ``anthropic`` when an Anthropic key is set, else ``openai``
    against ``llm_base_url``; ``scripted`` replays ``script_path`` (tests and demos).
    """

    model_config = SettingsConfigDict(
        env_prefix="CREWBOX_", env_file=".env", extra="ignore", populate_by_name=True
    )

    provider: Literal["auto", "anthropic", "openai", "scripted"] = "auto"
    model: str = "claude-sonnet-5-5"
    effort: Literal["low", "medium", "high", "max"] | None = None
    """``CREWBOX_EFFORT``: the effort of calls whose persona sets none (crewbox.llm.catalog);
    unset or blank: each model's own default."""

    @field_validator("effort", "anthropic_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """A blank ``CREWBOX_EFFORT`` or ``CREWBOX_ANTHROPIC_BASE_URL`` (docker-compose passes
        ``${CREWBOX_EFFORT:-}``, ``${ANTHROPIC_BASE_URL:-}``) is unset."""
        return None if isinstance(value, str) and not value.strip() else value

    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CREWBOX_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    anthropic_api_key_file: Path | None = None
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CREWBOX_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL"),
    )
    llm_base_url: str = "http://localhost:8080/v1"
    llm_api_key: SecretStr = SecretStr("none")
    llm_model: str = "smollm2-135m-instruct"
    llm_max_tokens: int = Field(default=768, ge=16)
    """Output cap per call with the ``openai`` provider (small local models ramble)."""
    llm_context_tokens: int = Field(default=4096, ge=512)
    """Context window per request of the ``openai`` server (compose: 4 slots of 4096)."""
    context_tokens: int | None = Field(default=None, ge=512)
    """The model's context window in tokens; None: :data:`CLAUDE_CONTEXT_TOKENS` on Claude,
    ``llm_context_tokens`` on an OpenAI-compatible server (see :meth:`context_window_tokens`)."""
    llm_timeout_s: float = 600.0
    llm_max_concurrency: int = Field(default=8, ge=1, le=256)
    """Calls in flight per credential at most (crewbox.llm.limiter: AIMD below it)."""
    llm_persona_concurrency: int = Field(default=2, ge=1, le=256)
    """Calls in flight per persona at most on an OpenAI-compatible server (the local model's
    few slots are shared by every persona; crewbox.llm.factory.limit_policy)."""
    llm_circuit_failures: int = Field(default=5, ge=1)
    """Retryable failures in a row that open a credential's circuit."""
    llm_circuit_cooldown_s: float = Field(default=10.0, gt=0)
    """How long an open circuit makes calls wait, in seconds."""
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of one LLM call on a retryable error (crewbox.llm.retry: the only layer)."""
    script_path: Path | None = None
    script_record_dir: Path | None = None

    prompts_dir: Path = Path("prompts")
    workspaces_dir: Path = Path("workspaces")
    tasks_dir: Path = Path("tasks")
    results_dir: Path = Path("results")

    queue: Literal["files", "rq"] = "files"
    redis_url: str = "redis://localhost:6379/0"
    redis_username: str | None = None
    """The Redis ACL user of this service (cluster: its own; None: ``default``)."""
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    redis_ca_file: Path | None = None
    """A ``rediss://`` URL's trusted CA certificates (PEM); None: the system's. The
    cluster's own CA is ``secrets/tls/ca.crt`` (``make certs``)."""
    redis_sentinels: str = ""
    """``host:port`` of Redis Sentinels, comma separated; set, the master of
    ``redis_sentinel_master`` is asked of them and ``redis_url`` gives only the database,
    the scheme (``rediss://``: TLS to the master) and nothing else."""
    redis_sentinel_master: str = "mymaster"
    """The service name the Sentinels monitor."""
    host_name: str = ""
    """The machine this process runs on, as `crewbox workers` shows it (compose: the host's
    hostname, passed in by make); empty: this container's or process's hostname."""

    max_turns: int = Field(default=20, ge=1, le=200)
    requests_per_minute: int | None = Field(default=None, ge=1)
    """Each persona's LLM requests per minute, unless its front matter says otherwise;
    None: no limit (crewbox.llm.ratelimit)."""
    input_tokens_per_minute: int | None = Field(default=None, ge=1)
    """Each persona's estimated input tokens per minute, unless its front matter says
    otherwise; None: no limit."""
    rate_limit_share: int = Field(default=1, ge=1)
    """Embedded: how many worker processes of a persona split its rate limits (set by
    ``crewbox run --workers N``); the cluster shares them through Redis instead."""
    max_tokens: int = Field(default=4096, ge=16)
    plan_repairs: int = Field(default=2, ge=0, le=5)
    max_planned_tasks: int = Field(default=24, ge=1, le=MAX_TASKS)
    """Tasks in a plan the LLM planner makes, at most (and at most what fits its output:
    orchestrator.plan.PlanLimits); plans given by file may hold up to MAX_TASKS."""
    planner_candidates: int = Field(default=24, ge=1)
    """Above this many personas, the planner is offered only this many: those whose names
    and descriptions match the request best (BM25, orchestrator.plan.candidate_personas)."""
    task_retries: int = Field(default=2, ge=0, le=5)
    """New attempts for a task lost with its worker or failed on a retryable API error."""
    heartbeat_timeout_s: float = Field(default=10.0, gt=0)
    """An attempt whose heartbeat is older than this is lost and dispatched again."""
    start_timeout_s: float = Field(default=60.0, gt=0)
    """An attempt that no worker has started this long after its dispatch, while no worker
    of its persona is alive, ends failed in the dead-letter queue (orchestrator.service)."""
    max_runs: int = Field(default=8, ge=1)
    """Runs one orchestrator service drives at once (the cluster)."""
    max_workers: int | None = Field(default=None, ge=1)
    """Embedded: worker processes at once, started for the personas a run dispatches to;
    None: crewbox.local.default_max_workers (twice the cores, at least 8)."""
    synthesis_budget_tokens: int = Field(default=6000, ge=500)
    max_artifact_bytes: int = Field(default=10 * MiB, ge=1)
    allow_bash: bool = False
    engine: Literal["builtin", "claude-code"] | None = None
    """``CREWBOX_ENGINE``: the engine of every persona's tasks (worker.engines), over
    their ``engine`` key; None: each persona's ``engine``, else builtin."""
    run_as: str | None = None
    """Cluster workers: ``uid:gid`` to become after reading the secrets as root (see
    crewbox.privileges); None: stay as started."""
    egress_allow: str = ""
    """The egress proxy: ``host:port`` destinations allowed besides the Anthropic API and
    ANTHROPIC_BASE_URL's host, comma separated."""
    workspace_mount: Path | None = None
    """Where the persona's workspace is in a container (``/workspace``); None: workspaces_dir."""
    work_dir: Path | None = None
    """Cluster workers: where task output folders go (a tmpfs); None: under results_dir."""

    def anthropic_key(self) -> str | None:
        """The Anthropic key: ``anthropic_api_key``, else the first line of the key file."""
        return _secret(self.anthropic_api_key, self.anthropic_api_key_file)

    def redis_secret(self) -> str | None:
        """The Redis password: ``redis_password``, else the first line of its file."""
        return _secret(self.redis_password, self.redis_password_file)

    def model_of(self, model: str | None) -> str:
        """The model id the calls of a persona (or role prompt) with ``model`` go to.

        On Claude: ``model``, or :meth:`default_model` for None and ``inherit``. On an
        OpenAI-compatible server (a local model): ``llm_model`` for None, ``inherit`` and any
        Claude id (aliases were resolved to Claude ids when the persona loaded), since the
        server serves its own model and its calls must not be priced as Claude's; any other
        id as it is.
        """
        if model in (None, "", "inherit"):
            return self.default_model()
        assert model is not None
        if self.resolved_provider() == "openai" and model.startswith("claude"):
            return self.llm_model
        return model

    def with_secrets_loaded(self) -> Settings:
        """A copy holding the key and the Redis password in memory, their file paths
        cleared: a service reads its secret files once, at start, before it drops the
        privileges that let it read them (see crewbox.privileges)."""
        key, password = self.anthropic_key(), self.redis_secret()
        return self.model_copy(
            update={
                "anthropic_api_key": SecretStr(key) if key else None,
                "anthropic_api_key_file": None,
                "redis_password": SecretStr(password) if password else None,
                "redis_password_file": None,
            }
        )

    def default_model(self) -> str:
        """The model id for ``model: inherit``: ``llm_model`` on openai, else ``model``."""
        return self.llm_model if self.resolved_provider() == "openai" else self.model

    def output_tokens(self) -> int:
        """``max_tokens`` for every call: ``llm_max_tokens`` on openai, else ``max_tokens``."""
        return self.llm_max_tokens if self.resolved_provider() == "openai" else self.max_tokens

    def context_window_tokens(self) -> int:
        """Tokens one call can take in all: ``context_tokens`` when set, else the local
        server's ``llm_context_tokens`` on openai, else the default model's context window
        in crewbox.llm.catalog (:data:`CLAUDE_CONTEXT_TOKENS` for the scripted provider)."""
        from crewbox.llm.catalog import capabilities  # the catalog imports no settings

        if self.context_tokens is not None:
            return self.context_tokens
        provider = self.resolved_provider()
        if provider == "openai":
            return self.llm_context_tokens
        if provider == "scripted":
            return CLAUDE_CONTEXT_TOKENS
        return capabilities(self.default_model()).context_tokens

    def request_tokens_limit(self) -> int:
        """Tokens a request may bring into each task's call (its text, context files and a
        task's instructions): half of what the context window leaves after the output;
        the other half is for the prompts, tools, dependencies and the task's turns."""
        return max(0, self.context_window_tokens() - self.output_tokens()) // 2

    def synthesis_tokens(self) -> int:
        """The synthesizer's input budget; on openai at most a third of the context window."""
        if self.resolved_provider() == "openai":
            return min(self.synthesis_budget_tokens, self.llm_context_tokens // 3)
        return self.synthesis_budget_tokens

    def resolved_provider(self) -> Literal["anthropic", "openai", "scripted"]:
        """The provider ``auto`` stands for: anthropic with a key, else openai."""
        if self.provider != "auto":
            return self.provider
        return "anthropic" if self.anthropic_key() else "openai"


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    """``value`` when it is not blank, else the first line of ``path`` (None when neither)."""
    if value is not None and value.get_secret_value().strip():
        return value.get_secret_value().strip()
    if path is not None and path.is_file():
        lines = path.read_text().strip().splitlines()
        return lines[0].strip() if lines else None
    return None
