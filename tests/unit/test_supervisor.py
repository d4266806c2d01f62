"""worker.supervisor with real processes: a child that stops beating is killed, its status
is passed on, SIGTERM reaches it, and a process of the child's uid cannot stop the
supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from worker.supervisor import STALLED_EXIT, beating, supervise

STALL_S = 0.5


def test_a_child_that_stops_itself_is_killed_after_the_stall_timeout() -> None:
    def child(beat_fd: int) -> None:
        with beating(beat_fd, interval_s=0.05):
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGSTOP)  # what a hostile tool did to its worker
            time.sleep(60)

    began = time.monotonic()
    assert supervise(child, stall_s=STALL_S) == STALLED_EXIT
    assert time.monotonic() - began < 5


def test_a_beating_child_is_left_alone_and_its_status_passed_on() -> None:
    def child(beat_fd: int) -> None:
        with beating(beat_fd, interval_s=0.05):
            time.sleep(4 * STALL_S)  # longer than the stall timeout, beating all along
        raise SystemExit(3)

    assert supervise(child, stall_s=STALL_S) == 3


def test_a_child_slow_to_its_first_beat_is_left_to_start() -> None:
    """Many workers starting at once on few cores are slow to their first beat."""

    def child(beat_fd: int) -> None:
        time.sleep(3 * STALL_S)  # still importing, no beat yet
        with beating(beat_fd, interval_s=0.05):
            time.sleep(0.2)
        raise SystemExit(4)

    assert supervise(child, stall_s=STALL_S, start_s=10 * STALL_S) == 4


def test_a_child_that_never_beats_is_killed_after_the_start_bound() -> None:
    def child(beat_fd: int) -> None:
        time.sleep(60)

    began = time.monotonic()
    assert supervise(child, stall_s=STALL_S, start_s=4 * STALL_S) == STALLED_EXIT
    assert 4 * STALL_S <= time.monotonic() - began < 5


def test_sigterm_to_the_supervisor_reaches_the_child() -> None:
    def child(beat_fd: int) -> None:
        with beating(beat_fd, interval_s=0.05):
            time.sleep(60)

    def raising(signum: int, frame: object) -> None:  # as a handler an earlier test left
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, raising)
    try:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        assert supervise(child, stall_s=10) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored


@pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
def test_as_root_a_child_of_another_uid_cannot_stop_the_supervisor_and_is_killed() -> None:
    supervisor_pid = os.getpid()
    read_fd, write_fd = os.pipe()

    def child(beat_fd: int) -> None:
        os.setgroups([])
        os.setgid(10001)
        os.setuid(10001)  # as the cluster's worker, and every tool it runs
        with beating(beat_fd, interval_s=0.05):
            try:
                os.kill(supervisor_pid, signal.SIGSTOP)
                os.write(write_fd, b"stopped it")
            except PermissionError:
                os.write(write_fd, b"refused")
            os.kill(os.getpid(), signal.SIGSTOP)
            time.sleep(60)

    assert supervise(child, stall_s=STALL_S, child_uid=10001) == STALLED_EXIT
    assert os.read(read_fd, 100) == b"refused"
    os.close(read_fd)
    os.close(write_fd)


CHILD_PID_SCRIPT = """
import os, sys, time
from worker.supervisor import beating, supervise

def child(beat_fd):
    with beating(beat_fd, interval_s=0.05):
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(60)

sys.exit(supervise(child, stall_s=10))
"""


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_child_dies_with_its_supervisor_even_by_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    supervisor = subprocess.Popen([sys.executable, "-c", CHILD_PID_SCRIPT, str(pid_file)], cwd=ROOT)
    deadline = time.monotonic() + 20
    while not pid_file.exists():
        assert time.monotonic() < deadline and supervisor.poll() is None
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    supervisor.kill()
    supervisor.wait()
    while running(child_pid):
        assert time.monotonic() < deadline, "the child outlived its supervisor"
        time.sleep(0.05)
