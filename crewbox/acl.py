"""Redis ACL users of the cluster: one per service, each reaching only what it needs.

A persona's worker (user ``<persona>``) can only take jobs from its own RQ queue, update
those jobs, their registries and its own worker keys, push to run inboxes, beat the
heartbeats of its own attempts, and read a run's owner lease and cancel flag. It can read
no other persona's queue or jobs, no run's events or results, no request. The orchestrator
(user ``orchestrator``) reaches every ``rq:*`` and ``crewbox:*`` key; the CLI (user
``client``) records and follows runs and enqueues requests; the run view (user ``web``) only
reads runs. The ``default`` user is off
(no connection can log in as it) but keeps every permission: Redis 7.0-7.4 replays the AOF's
MULTI/EXEC blocks as ``default`` and re-checks its ACL at EXEC, so a ``default`` without
permissions silently dropped every transaction on restart (redis/redis#14541, fixed upstream
by redis/redis#14545). ``healthcheck`` (no password) may only PING.

A persona has no Lua (``@scripting``), no SCAN, RANDOMKEY, DBSIZE, SELECT, INFO or PUBSUB
(only SUBSCRIBE to its own workers' RQ command channels), no CLIENT but SETNAME/GETNAME/ID/
INFO: nothing that runs unbounded on the server or lists keys it does not own.

The key patterns follow RQ 3.0's layout (``rq:queue:<q>``, ``rq:job:<id>``,
``rq:wip:<q>`` and the other registries, ``rq:worker:<name>``, ``rq:workers:<q>``,
``rq:execution(s):<job id>...``, channel ``rq:pubsub:<worker name>``) and crewbox's: job ids
start with ``<persona>__`` and worker names with ``<persona>.``, so a pattern can name a
persona's own. See docs/architecture.md, "Keys in Redis".

Standard library only: ``make up`` runs it with the host's python3 (``python3 -m
crewbox.acl``) to write the users file before any image is built.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import sys
from pathlib import Path

from crewbox.persona_file import NAME_PATTERN

PERSONA_NAME = NAME_PATTERN
"""Persona names (crewbox.persona_file) are usable in key patterns: no glob characters, no
``.`` (the worker name's separator), no ``:`` (RQ's key separator), no ``_``
(``<persona>__`` starts its job ids: ``dev__*`` would match the jobs of a persona ``dev_``)."""

COMMANDS = ["-@all", "+@read", "+@write", "+@keyspace", "+@list", "+@hash", "+@set",
            "+@sortedset", "+@stream", "+@string", "+@scripting", "+@pubsub",
            "+@transaction", "+@connection", "+@fast", "+@slow",
            "-@dangerous", "+info", "+client|setname", "+client|info", "+client|id"]  # fmt: skip
"""Commands every service may run: data commands on the keys its patterns allow, never the
dangerous ones (KEYS, FLUSHALL, CONFIG, DEBUG, MONITOR, ACL changes...); INFO and
CLIENT SETNAME/INFO because RQ asks for the server version and names its connections."""

PERSONA_COMMANDS = ["-@all", "+@read", "+@write", "+@keyspace", "+@list", "+@hash", "+@set",
                    "+@sortedset", "+@stream", "+@string", "+@transaction", "+@connection",
                    "+@fast", "+@slow", "-@dangerous", "-@scripting", "-@pubsub", "-@admin",
                    "-scan", "-randomkey", "-dbsize", "-select", "-swapdb", "-move", "-copy",
                    "-object", "-client", "-memory", "-wait", "+subscribe",
                    "+unsubscribe", "+client|setname", "+client|getname", "+client|id",
                    "+client|info"]  # fmt: skip
"""Commands a persona's worker may run, on its own keys only: COMMANDS without Lua (a
script can hold the server BUSY for every client), SCAN/RANDOMKEY/DBSIZE (they list or count
keys of others), INFO and PUBSUB (they show run ids, channels and clients), SELECT, MOVE and
COPY (other databases), OBJECT/MEMORY/WAIT, and CLIENT but naming its own connection. RQ's
worker still SUBSCRIBEs to its own command channel (kill-horse, shutdown, stop-job) and asks
the server version through INFO, which crewbox.queue.rq_worker answers without asking."""

RQ_REGISTRIES = ["wip", "finished", "failed", "deferred", "scheduled", "canceled", "ready"]
"""RQ 3.0's job registries of a queue: ``rq:<registry>:<queue>`` sorted sets."""

WEB_COMMANDS = ["-@all", "+@read", "-@dangerous", "-@scripting", "-@pubsub", "-@admin",
                "-scan", "-randomkey", "-dbsize", "-object", "-memory", "+ping",
                "+client|setname", "+client|getname", "+client|id", "+client|info"]  # fmt: skip
"""Commands the run view (``crewbox web``) may run: reads only (@read), none dangerous
(KEYS), no Lua, no SCAN/RANDOMKEY/DBSIZE (they list or count keys it cannot read), no
PUBSUB; PING and naming its own connection."""

SERVICE_USERS = ["orchestrator", "client", "web"]
"""The users that are not personas (besides ``healthcheck``)."""


class ACLError(ValueError):
    """A persona name that cannot be named safely in a key pattern."""


def persona_rules(persona: str) -> list[str]:
    """The ACL rules (``ACL SETUSER`` tokens, no password) of ``persona``'s worker.

    Raises:
        ACLError: ``persona`` does not match PERSONA_NAME.
    """
    if not PERSONA_NAME.match(persona):
        raise ACLError(
            f"persona name {persona!r} cannot be used in a Redis ACL pattern; persona names "
            "are lower-case letters, digits and -"
        )
    p = persona
    own = [
        f"~rq:queue:{p}",
        f"~rq:queue:{p}:*",
        f"~rq:job:{p}__*",
        f"~rq:job::{p}__*",  # RQ names a job's dependencies set rq:job::<id>:dependencies
        f"~rq:results:{p}__*",
        f"~rq:execution:{p}__*",
        f"~rq:executions:{p}__*",
        f"~rq:worker:{p}.*",
        f"~rq:workers:{p}",
        f"~rq:clean_registries:{p}",
        *(f"~rq:{registry}:{p}" for registry in RQ_REGISTRIES),
    ]
    return [
        "resetkeys",
        "resetchannels",
        *own,
        "%W~rq:workers",
        "%R~rq:suspended",
        "%R~rq:rl-keys",
        "%W~crewbox:run:*:inbox",
        f"%W~crewbox:run:*:heartbeats:{p}",
        f"~crewbox:run:*:spend:{p}",
        "%R~crewbox:run:*:spend:*",
        f"~crewbox:limit:{p}:*",
        "%R~crewbox:run:*:owner",
        "%R~crewbox:run:*:cancel",
        f"&rq:pubsub:{p}.*",
        *PERSONA_COMMANDS,
    ]


def orchestrator_rules() -> list[str]:
    """The orchestrator's rules: every RQ and crewbox key and RQ channel."""
    return ["resetkeys", "resetchannels", "~rq:*", "~crewbox:*", "&rq:*", *COMMANDS]


def client_rules() -> list[str]:
    """The CLI's rules: read runs, RQ workers and jobs (``crewbox workers``); write runs
    (submit records one, cancel sets its flag, ``dlq retry`` appends an event); enqueue
    on the requests queue only."""
    return [
        "resetkeys",
        "resetchannels",
        "~crewbox:runs",
        "~crewbox:run:*",
        "~rq:queue:requests",
        "~rq:job:request__*",
        "~rq:job::request__*",
        "%W~rq:queues",
        "%R~rq:*",
        *COMMANDS,
    ]


def web_rules() -> list[str]:
    """The run view's rules: read (``%R``) the run list and every run's keys, nothing
    else; with WEB_COMMANDS no command that writes is allowed at all."""
    return ["resetkeys", "resetchannels", "%R~crewbox:runs", "%R~crewbox:run:*", *WEB_COMMANDS]


def healthcheck_rules() -> list[str]:
    """The Redis container's own healthcheck: PING, nothing else, no password."""
    return ["resetkeys", "resetchannels", "nopass", "-@all", "+ping"]


def rules(service: str) -> list[str]:
    """The rules of ``service``: ``orchestrator``, ``client``, ``web``, ``healthcheck`` or a
    persona.

    Raises:
        ACLError: a persona name that cannot be used in a pattern.
    """
    if service == "orchestrator":
        return orchestrator_rules()
    if service == "client":
        return client_rules()
    if service == "healthcheck":
        return healthcheck_rules()
    if service == "web":
        return web_rules()
    return persona_rules(service)


def password_hash(password: str) -> str:
    """``#<sha256 hex>``: how an ACL file names a password without holding it."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


MAXMEMORY = "256mb"
"""Redis's default ``maxmemory``: half the container's ``mem_limit`` (512m in
docker-compose.yml), leaving room for client buffers, the AOF buffer and the copy-on-write
of an AOF rewrite, so Redis refuses writes (an OOM error to the writer) before the kernel
kills it; ``CREWBOX_REDIS_MAXMEMORY`` (or ``--maxmemory``) changes it."""

MEMORY_SIZE = re.compile(r"^[0-9]+(b|kb|mb|gb)?$", re.IGNORECASE)
"""A Redis memory size: bytes, or a number with kb/mb/gb."""

REDIS_CONF = """\
# Written by `make up` (python3 -m crewbox.acl); edits are lost on the next `make up`.
dir /data
appendonly yes
appendfsync everysec
maxmemory {maxmemory}
maxmemory-policy noeviction
proto-max-bulk-len 64mb
protected-mode no
"""
"""The server settings: AOF with fsync every second keeps the runs across restarts;
``maxmemory`` with ``noeviction``: past it, writes fail (the writer gets an OOM error) and
no run data is ever evicted; no single value above 64 MB (a result carries at most
``CREWBOX_MAX_ARTIFACT_BYTES``, 10 MiB, in base64: about 14 MB)."""


TLS_PORT = 6380
"""Redis's TLS port inside its container; ``make up REDIS_TLS_PORT=<port>`` publishes it on
the host (redis-tls.yml). The plain-text port 6379 stays, on the compose networks only."""

TLS_CONF = """\
tls-port {port}
tls-cert-file /run/secrets/redis_tls_cert
tls-key-file /run/secrets/redis_tls_key
tls-ca-cert-file /run/secrets/redis_tls_ca
tls-auth-clients no
"""
"""The TLS settings (redis.io, "TLS"): the certificate and key of scripts/make-certs.sh (or
the user's), mounted by redis-tls.yml. Clients show no certificate (``tls-auth-clients
no``): each logs in as its ACL user with its password, as on the plain port; TLS keeps
that password and the traffic secret and proves the server is this cluster's Redis."""

DEFAULT_USER = "user default off nopass ~* &* +@all"
"""``default``: off, so no connection is ever logged in as it, and with every permission,
because the AOF loader replays MULTI/EXEC as ``default`` and EXEC re-checks its ACL on Redis
before 8.0 (redis/redis#14541): ``-@all`` there dropped every transaction on restart."""


def users_conf(passwords: dict[str, str]) -> str:
    """The ``user`` lines of redis.conf: ``default`` off, ``healthcheck``, and one user per
    entry of ``passwords`` (service name -> password), with hashed passwords only.

    Raises:
        ACLError: a persona name that cannot be used in a pattern.
    """
    lines = [DEFAULT_USER]
    lines.append("user healthcheck on " + " ".join(healthcheck_rules()))
    for service, password in sorted(passwords.items()):
        tokens = ["on", password_hash(password), *rules(service)]
        lines.append(f"user {service} " + " ".join(tokens))
    return "\n".join(lines) + "\n"


def ensure_password(path: Path) -> str:
    """The password in ``path``; a random one written there (mode 0600) when it is missing."""
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


def write_redis_conf(
    secrets_dir: Path, personas: list[str], maxmemory: str = MAXMEMORY, tls: bool = False
) -> Path:
    """Make sure every service has a password in ``secrets_dir/redis/<service>.password``
    and write ``secrets_dir/resolved/redis.conf`` (REDIS_CONF with ``maxmemory``, TLS_CONF
    when ``tls``, and the users); returns that file's path.

    Raises:
        ACLError: a persona name that cannot be used in a pattern, or a ``maxmemory`` that
            is not a memory size (``384mb``).
    """
    if not MEMORY_SIZE.match(maxmemory):
        raise ACLError(f"maxmemory {maxmemory!r} is not a memory size such as 384mb")
    services = [*SERVICE_USERS, *personas]
    passwords = {s: ensure_password(secrets_dir / "redis" / f"{s}.password") for s in services}
    out = secrets_dir / "resolved" / "redis.conf"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = REDIS_CONF.format(maxmemory=maxmemory)
    if tls:
        settings += TLS_CONF.format(port=TLS_PORT)
    out.write_text(settings + users_conf(passwords))
    out.chmod(0o644)  # hashes only; Redis reads it as a non-root user
    return out


def main(argv: list[str] | None = None) -> int:
    """``python3 -m crewbox.acl [--secrets DIR] PERSONA...``: write redis.conf and any
    missing password.

    Exit status 0, or 2 with one line on stderr for a persona name that cannot be used.
    """
    parser = argparse.ArgumentParser(prog="python3 -m crewbox.acl", description=__doc__)
    parser.add_argument("--secrets", type=Path, default=Path("secrets"))
    parser.add_argument(
        "--maxmemory", default=os.environ.get("CREWBOX_REDIS_MAXMEMORY") or MAXMEMORY
    )
    parser.add_argument("--tls", action="store_true", help="also serve TLS on TLS_PORT")
    parser.add_argument("personas", nargs="+")
    args = parser.parse_args(argv)
    try:
        write_redis_conf(args.secrets, args.personas, args.maxmemory, args.tls)
    except ACLError as exc:
        print(f"crewbox.acl: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
