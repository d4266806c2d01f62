#!/usr/bin/env bash
# The CLI against a Docker Swarm stack (`make stack`): scripts/stack-client.sh STACK crewbox ...
#
# What `docker compose run client` is to `make up`: a one-off, hardened container of crewbox's
# image on the stack's client network (the only attachable overlay: crewbox/stack.py), as
# the Redis user `client`, with no LLM key and no results/. Swarm secrets reach services only,
# so its Redis password is bind-mounted from secrets/: run it on a manager node, in the
# project folder `make stack` ran in.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then echo "usage: scripts/stack-client.sh STACK crewbox ARGS..." >&2; exit 2; fi
stack=$1; shift
password=secrets/redis/client.password
if [ ! -f "$password" ]; then
  echo "crewbox: error: no $password; run \`make stack\` first" >&2; exit 2
fi
uid=$(id -u); gid=$(id -g)
if [ "$uid" = 0 ]; then uid=${CREWBOX_UID:-10001}; gid=${CREWBOX_GID:-10001}; fi
tty=(); [ -t 0 ] && [ -t 1 ] && tty=(-t)
exec docker run --rm -i "${tty[@]}" \
  --network "${stack}_client-net" \
  --read-only --cap-drop ALL --security-opt no-new-privileges:true --pids-limit 256 \
  --tmpfs /tmp:rw,nosuid,nodev,size=256m,mode=1777 --init --user "$uid:$gid" \
  -e CREWBOX_QUEUE=rq -e CREWBOX_REDIS_URL=redis://redis:6379/0 \
  -e CREWBOX_REDIS_USERNAME=client -e CREWBOX_REDIS_PASSWORD_FILE=/run/secrets/redis_password \
  -e CREWBOX_MODEL="${CREWBOX_MODEL:-claude-sonnet-5-5}" \
  -e CREWBOX_MAX_TOKENS="${CREWBOX_MAX_TOKENS:-4096}" \
  -e CREWBOX_MAX_TURNS="${CREWBOX_MAX_TURNS:-20}" \
  -e CREWBOX_LOG_LEVEL="${CREWBOX_LOG_LEVEL:-INFO}" -e CREWBOX_HOST_RESULTS_DIR=results \
  -v "$PWD/$password:/run/secrets/redis_password:ro" \
  -v "$PWD/prompts:/app/prompts:ro" -v "$PWD/workflows:/app/workflows:ro" \
  "${COMPOSE_PROJECT_NAME:-crewbox}:local" "$@"
