"""Processes of this host, named ``<hostname>:<pid>`` in worker ids and run leases."""

from __future__ import annotations

import os
import socket


def process_id() -> str:
    """``<hostname>:<pid>`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_dead_local(host: str, pid: str) -> bool:
    """True when ``host`` is this host and no process ``pid`` runs here (False for another
    host: its processes cannot be seen from here)."""
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
