#!/usr/bin/env bash
# Prepare the compose secrets under secrets/, then print "llm" when some service has no
# Anthropic key (so `make up` starts the local model), or nothing when all have one.
#
#   secrets/<service>.key           a service's own Anthropic key (optional)
#   secrets/anthropic.key           the shared key (optional; also ANTHROPIC_API_KEY in env or .env)
#   secrets/redis/<service>.password  the service's own Redis password: made at random when
#                                   missing (orchestrator, client, each persona)
#   secrets/resolved/<service>.key  what the service's container receives: its own key,
#                                   else the shared key, else empty (then it uses the local model)
#   secrets/resolved/redis.conf     Redis's settings and ACL users (hashed passwords only)
#   secrets/tls/                    with REDIS_TLS_PORT: the TLS port's CA and certificate
#                                   (scripts/make-certs.sh)
#
# Every key and password file is readable by its owner only (0600). The orchestrator and the
# client run as the host user (CREWBOX_UID, 10001 when the host user is root: then their
# files are given to that uid); a persona's worker reads its files as root with
# DAC_READ_SEARCH, then drops to uid 10001, which cannot read them (crewbox/privileges.py).
set -euo pipefail
cd "$(dirname "$0")/.."
personas=("$@")
services=(orchestrator "${personas[@]}")
[ -f .env ] && { set -a; . ./.env; set +a; }

umask 077
mkdir -p secrets/resolved secrets/redis
chmod 755 secrets/resolved  # Redis (uid 999) reads redis.conf in it
if [ -n "${REDIS_TLS_PORT:-}" ]; then scripts/make-certs.sh; fi
# REDIS_TLS_PORT set (make up REDIS_TLS_PORT=6380): Redis serves TLS too (redis-tls.yml)
python3 -m crewbox.acl --secrets secrets ${REDIS_TLS_PORT:+--tls} "${personas[@]}"

first_line() { [ -s "$1" ] && head -n1 "$1" | tr -d '[:space:]' || true; }
shared=$(first_line secrets/anthropic.key)
shared=${shared:-${ANTHROPIC_API_KEY:-}}
need_llm=
for s in "${services[@]}"; do
  key=$(first_line "secrets/$s.key")
  key=${key:-$shared}
  printf '%s' "$key" > "secrets/resolved/$s.key"
  chmod 600 "secrets/resolved/$s.key"
  [ -n "$key" ] || need_llm=llm
done
chmod 600 secrets/redis/*.password
# The services that run as the host user: when that is root, they run as CREWBOX_UID.
if [ "$(id -u)" = 0 ] && [ -n "${CREWBOX_UID:-}" ]; then
  chown "$CREWBOX_UID:${CREWBOX_GID:-$CREWBOX_UID}" secrets/resolved/orchestrator.key \
    secrets/redis/orchestrator.password secrets/redis/client.password secrets/redis/web.password
fi
echo "$need_llm"
