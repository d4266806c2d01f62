#!/usr/bin/env bash
# The certificates of Redis's published TLS port (`make certs`, and `make up REDIS_TLS_PORT=...`):
#
#   secrets/tls/ca.key     the cluster's own CA key (0600): whoever holds it can impersonate
#                          Redis to every worker host; it never leaves this machine
#   secrets/tls/ca.crt     the CA certificate: copy it to each worker host
#   secrets/tls/redis.key  Redis's key; secrets/tls/redis.crt its certificate, signed by the
#                          CA, naming redis, localhost, 127.0.0.1, host.docker.internal (a
#                          worker host tried on this same machine), this host's name and every
#                          entry of REDIS_TLS_NAMES (comma separated names or IP addresses)
#
# The server certificate is made again when REDIS_TLS_NAMES is given and differs from the
# names it was made with (without REDIS_TLS_NAMES an existing one is kept); the CA is kept.
# Your own files: put redis.crt, redis.key and ca.crt in secrets/tls/ with no ca.key, and
# nothing here is ever written. Follows redis.io's TLS page (utils/gen-test-certs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=secrets/tls
mkdir -p "$dir"
chmod 700 "$dir"
if [ -f "$dir/redis.crt" ] && { [ ! -f "$dir/ca.key" ] || [ -z "${REDIS_TLS_NAMES:-}" ]; }; then
  exit 0  # the user's own certificates, or ours with no new names asked for
fi

names="DNS:redis,DNS:localhost,IP:127.0.0.1,DNS:host.docker.internal,DNS:$(hostname)"
IFS=',' read -ra extra <<<"${REDIS_TLS_NAMES:-}"
for name in "${extra[@]}"; do
  name=$(echo "$name" | tr -d '[:space:]')
  [ -n "$name" ] || continue
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then names="$names,IP:$name"; else names="$names,DNS:$name"; fi
done

if [ ! -f "$dir/ca.key" ]; then
  (umask 077; openssl genrsa -out "$dir/ca.key" 3072 2>/dev/null)
  openssl req -x509 -new -nodes -sha256 -key "$dir/ca.key" -days 3650 \
    -subj "/O=crewbox/CN=crewbox Redis CA" -out "$dir/ca.crt"
  rm -f "$dir/names"
fi
if [ -f "$dir/redis.crt" ] && [ "$(cat "$dir/names" 2>/dev/null)" = "$names" ]; then
  exit 0
fi
(umask 077; openssl genrsa -out "$dir/redis.key" 2048 2>/dev/null)
openssl req -new -sha256 -key "$dir/redis.key" -subj "/O=crewbox/CN=redis" -out "$dir/redis.csr"
openssl x509 -req -sha256 -in "$dir/redis.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
  -CAcreateserial -days 825 -out "$dir/redis.crt" \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$names") 2>/dev/null
rm -f "$dir/redis.csr" "$dir/ca.srl"
echo "$names" > "$dir/names"
# Redis reads its key as uid 999 through a bind mount: the file is readable (0644), the
# folder around it is not (0700), so on this machine only its owner reaches it.
chmod 644 "$dir/redis.key" "$dir/redis.crt" "$dir/ca.crt"
echo "secrets/tls: a server certificate for ${names//DNS:/}" >&2
