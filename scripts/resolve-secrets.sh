#!/usr/bin/env bash
# Prepare the compose secrets under secrets/, then print "llm" when some service has no
# Anthropic key (so `make up` starts the local model), or nothing when all have one.
#
#   secrets/redis.password        made once, at random, when missing
#   secrets/<service>.key         a service's own Anthropic key (optional)
#   secrets/anthropic.key         the shared key (optional; also ANTHROPIC_API_KEY in env or .env)
#   secrets/resolved/<service>.key  what the service's container receives: its own key,
#                                 else the shared key, else empty (then it uses the local model)
set -euo pipefail
cd "$(dirname "$0")/.."
services=(orchestrator "$@")
[ -f .env ] && { set -a; . ./.env; set +a; }

mkdir -p secrets/resolved
chmod 700 secrets/resolved
if [ ! -s secrets/redis.password ]; then
  python3 -c 'import secrets; print(secrets.token_hex(24))' > secrets/redis.password
fi
# Readable by the container's non-root user: a bind-mounted file keeps its host mode.
chmod 644 secrets/redis.password

first_line() { [ -s "$1" ] && head -n1 "$1" | tr -d '[:space:]' || true; }
shared=$(first_line secrets/anthropic.key)
shared=${shared:-${ANTHROPIC_API_KEY:-}}
need_llm=
for s in "${services[@]}"; do
  key=$(first_line "secrets/$s.key")
  key=${key:-$shared}
  printf '%s' "$key" > "secrets/resolved/$s.key"
  chmod 644 "secrets/resolved/$s.key"
  [ -n "$key" ] || need_llm=llm
done
echo "$need_llm"
