# One image for the orchestrator and every persona worker. Workers of personas with
# `engine: claude-code` use Dockerfile.claude-code on top of it (the Claude Code CLI added).
# PYTHON_IMAGE: the base image (official default; CI passes a local stand-in).
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

# What a persona's Bash commands need: git, ripgrep, coreutils.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      git ripgrep coreutils ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (cached while only the code changes).
COPY pyproject.toml README.md ./
RUN mkdir -p crewbox orchestrator worker \
 && touch crewbox/__init__.py orchestrator/__init__.py worker/__init__.py \
 && pip install --no-cache-dir . \
 && pip uninstall -y crewbox \
 && rm -rf crewbox orchestrator worker build
COPY crewbox crewbox
COPY orchestrator orchestrator
COPY worker worker
RUN pip install --no-cache-dir --no-deps . && rm -rf build

COPY prompts prompts
COPY workflows workflows
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp crewbox \
 && mkdir -p /app/results /workspace

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CREWBOX_PROMPTS_DIR=/app/prompts \
    CREWBOX_RESULTS_DIR=/app/results \
    CREWBOX_TASKS_DIR=/tmp/tasks \
    CREWBOX_WORKSPACES_DIR=/app/workspaces
USER 10001:10001
CMD ["crewbox", "--help"]
