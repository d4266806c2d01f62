"""A cluster worker's supervisor: a worker that stops heartbeating is killed and restarted.

A tool runs as the worker's uid (10001), so it can signal the worker: ``kill -STOP`` of its
own worker froze a run, and the container only went unhealthy (compose does not restart
unhealthy containers). So ``crewbox worker`` in the cluster forks: the parent, the
supervisor, stays root (it never runs a tool and reads nothing but a pipe); the child drops
to ``CREWBOX_RUN_AS`` (crewbox.privileges) and serves the queue, writing a byte to the pipe
every BEAT_INTERVAL_S from a thread of its own. When no byte comes for STALL_S (the child is
stopped, or hung as a whole), the supervisor SIGKILLs it and exits with STALLED_EXIT: the
container's init (``init: true``) exits with it, the kernel kills whatever the child left in
the container, and the ``restart: unless-stopped`` policy starts a fresh container whose
worker registers at once; the orchestrator has already dispatched the lost attempt again.

Nothing running as uid 10001 can stop this: signalling a process needs the same real or
saved uid (the supervisor's are 0) or CAP_KILL (which the container does not have); the
pipe's descriptors are not inherited by tools (close-on-exec) and the non-dumpable worker's
``/proc/<pid>/fd`` is root's. The supervisor has no CAP_KILL either: it signals its child
with its effective uid set to the child's for that one call (CAP_SETUID; its real and saved
uids stay 0, so no tool can signal it meanwhile). SIGTERM and SIGINT are passed on to the
child (RQ's warm shutdown); the supervisor then exits with the child's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from crewbox.periodic import Periodic

log = logging.getLogger("crewbox.supervisor")

BEAT_INTERVAL_S = 1.0
"""How often the child writes a byte to the supervisor's pipe."""

STALL_S = 30.0
"""Silence on the pipe after which the child counts as stalled (seconds): well past a beat
every second, before the healthcheck's 80 s bound (crewbox.health)."""

START_S = 180.0
"""Silence allowed before the child's first beat (seconds): a child still starting is not
stalled. 60 workers starting at once on 2 cores took over 30 s each to their first beat, and
a STALL_S bound there killed them over and over (tests/e2e/test_many_personas.py)."""

STALLED_EXIT = 75
"""The supervisor's exit status when it killed a stalled child (EX_TEMPFAIL)."""

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies (linux/prctl.h)."""

_supervisor_pid: int | None = None
"""In a child of :func:`supervise`: its supervisor's pid."""

ChildMain = Callable[[int], None]
"""What the child runs, given the pipe's write end (see :func:`beating`); returns or raises
SystemExit when it is done."""


def supervise(
    child_main: ChildMain,
    stall_s: float = STALL_S,
    child_uid: int | None = None,
    start_s: float = START_S,
) -> int:
    """Fork; run ``child_main(beat_fd)`` in the child; watch its beats in this process.

    ``child_uid``: the uid the child will switch to (signals are sent as that uid when this
    process is root); None: this process's own.

    Returns the exit status to leave with: the child's (128 + signal when a signal ended
    it), or STALLED_EXIT after killing a child silent for ``stall_s`` (``start_s`` before
    its first beat, when longer).
    """
    global _supervisor_pid
    _supervisor_pid = os.getpid()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        _run_child(child_main, write_fd)
    os.close(write_fd)
    uid = os.geteuid() if child_uid is None else child_uid
    previous = _forward_signals(pid, uid)
    try:
        return _watch(pid, read_fd, stall_s, uid, max(start_s, stall_s))
    finally:
        os.close(read_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_child(child_main: ChildMain, beat_fd: int) -> None:
    """The child's whole life: ``child_main``, then ``os._exit`` (never back to the caller).

    SIGTERM and SIGINT start at their defaults in the child, whatever handlers the forking
    process had: ``child_main`` installs its own (the RQ worker's warm shutdown)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    status = 0
    try:
        child_main(beat_fd)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the child must end here whatever happens
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def beating(beat_fd: int, interval_s: float = BEAT_INTERVAL_S) -> Periodic:
    """A ``with`` block during which a thread writes a byte to ``beat_fd`` every
    ``interval_s`` (and at once): the child's sign of life for :func:`supervise`.

    Also makes this process die with its supervisor (:func:`die_with_parent`): call it after
    any uid switch, which clears that setting.
    """
    die_with_parent()

    def beat() -> bool:
        try:
            os.write(beat_fd, b".")
        except OSError:  # the supervisor is gone: nothing to tell
            return True
        return False

    return Periodic(interval_s, beat, "supervisor-beat", first_now=True)


def die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): SIGKILL this process when its parent (the
    supervisor) dies, even by SIGKILL; exits at once if it is already gone. No-op where
    there is no prctl (not Linux)."""
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path, use_errno=True) if path else None
    if libc is not None and hasattr(libc, "prctl"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if _supervisor_pid is not None and os.getppid() != _supervisor_pid:
        os._exit(STALLED_EXIT)  # re-parented: the supervisor died before the call


def _watch(pid: int, read_fd: int, stall_s: float, uid: int, start_s: float) -> int:
    """Read beats until the child closes the pipe (it ended) or is silent for ``stall_s``
    (``start_s`` until its first beat)."""
    bound_s = start_s
    while True:
        try:
            ready, _, _ = select.select([read_fd], [], [], bound_s)
        except InterruptedError:  # a signal was forwarded; keep watching
            continue
        if not ready:
            log.error("worker %d sent no heartbeat for %.0fs: killing it", pid, bound_s)
            send_as(pid, signal.SIGKILL, uid)
            _wait(pid)
            return STALLED_EXIT
        if not os.read(read_fd, 4096):  # EOF: the child exited (or closed it: wait anyway)
            return _wait(pid)
        bound_s = stall_s


def _wait(pid: int) -> int:
    """Wait for the child; its exit status, or 128 + the signal that ended it."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def send_as(pid: int, signum: int, uid: int) -> None:
    """Send ``signum`` to ``pid``, as ``uid`` when this process is root and ``uid`` is not
    (a root without CAP_KILL may signal only its own uid's processes); ignores a gone pid."""
    switch = os.geteuid() == 0 and uid != 0
    with contextlib.suppress(ProcessLookupError):
        if switch:
            os.seteuid(uid)
        try:
            os.kill(pid, signum)
        finally:
            if switch:
                os.seteuid(0)


def _forward_signals(pid: int, uid: int) -> dict[int, Any]:
    """Pass SIGTERM and SIGINT on to the child; returns the handlers they replaced."""

    def forward(signum: int, frame: FrameType | None) -> None:
        send_as(pid, signum, uid)

    return {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
