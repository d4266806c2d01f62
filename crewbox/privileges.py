"""What a cluster service gives up once it has read its secrets.

A persona's worker container starts as root with only the capabilities needed to read its
secret files (``DAC_READ_SEARCH``: the files under ``/run/secrets`` are readable by their
owner only) and to change user (``SETUID``, ``SETGID``). ``crewbox worker`` reads its LLM
key and Redis password into memory (``Settings.with_secrets_loaded``), then
:func:`drop_privileges` switches the process to ``CREWBOX_RUN_AS`` (``10001:10001``), which
clears every capability for good. From then on neither the worker nor any tool it runs
(Bash included, as the same uid) can open a secret file again. The process is also marked
non-dumpable, so no other process of that uid can read its memory or environment through
``/proc/<pid>/mem``, ``/proc/<pid>/environ`` or ptrace. In the cluster it is a forked child
that drops: its parent, the supervisor (worker.supervisor), stays root and runs no tool, so
that a tool of uid 10001 cannot signal it, and restarts the container when the worker
freezes.

A worker, embedded as in the cluster, also deletes the secret variables (``SECRET_ENV``) from
its own environment once its settings hold them (:func:`forget_secret_environment`), so no
process it starts later inherits them; its Bash tool passes on only a short allowlist anyway
(``worker.tools.bash.tool_environment``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

from crewbox.errors import UserError

log = logging.getLogger("crewbox.privileges")

PR_SET_DUMPABLE = 4
"""prctl(2) option; value 0: core dumps off, /proc/<pid> files owned by root, no ptrace
by processes of the same uid (linux/prctl.h)."""


SECRET_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "CREWBOX_ANTHROPIC_API_KEY",
    "CREWBOX_ANTHROPIC_API_KEY_FILE",
    "CREWBOX_LLM_API_KEY",
    "CREWBOX_REDIS_PASSWORD",
    "CREWBOX_REDIS_PASSWORD_FILE",
)
"""Variables holding a credential or a secret file's path: the ``SecretStr`` settings of
crewbox.config (with their aliases and ``*_file`` companions) and the SDKs' own keys."""


def forget_secret_environment() -> list[str]:
    """Delete ``SECRET_ENV`` from this process's environment; return the names deleted.

    Call it once the settings are loaded (``Settings.with_secrets_loaded``): the key then
    lives only in the settings and the LLM client built from them.
    """
    present = [name for name in SECRET_ENV if name in os.environ]
    for name in present:
        del os.environ[name]
    return present


def parse_run_as(run_as: str) -> tuple[int, int]:
    """``"uid:gid"`` (or ``"uid"``, gid = uid) as numbers.

    Raises:
        UserError: not one or two whole numbers, or uid 0.
    """
    parts = run_as.split(":")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"CREWBOX_RUN_AS={run_as!r} is not uid:gid (e.g. 10001:10001)")
    uid, gid = int(parts[0]), int(parts[-1])
    if uid == 0:
        raise UserError("CREWBOX_RUN_AS must name a non-root uid (e.g. 10001:10001)")
    return uid, gid


def set_non_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on this process; False where there is no prctl (not Linux)."""
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    libc = ctypes.CDLL(path, use_errno=True)
    if not hasattr(libc, "prctl"):
        return False
    return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)


def drop_privileges(run_as: str | None) -> None:
    """Become ``run_as`` (``uid:gid``) when running as root, with no supplementary groups
    and no capabilities; mark the process non-dumpable either way.

    Raises:
        UserError: ``run_as`` is malformed, or the switch was refused (the container lacks
            SETUID/SETGID).
    """
    if run_as and os.geteuid() == 0:
        uid, gid = parse_run_as(run_as)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except PermissionError as exc:
            raise UserError(
                f"cannot switch to uid {uid} ({exc}); the container needs cap_add SETUID, SETGID"
            ) from exc
        log.info("dropped to uid %d gid %d after reading the secrets", uid, gid)
    set_non_dumpable()
