"""Serve the run view with uvicorn on a socket bound here first, so a port in use is one
clear line (UserError) rather than a server log and an exit."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from crewbox.errors import UserError
from crewbox.runlog.base import RunLog
from crewbox.web.app import create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv6 when ``host`` is an IPv6 address).

    Raises:
        UserError: the address is in use or cannot be bound here.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "pick another port with --port (or stop what uses it)"
        ) from exc
    sock.listen(128)
    return sock


def serve(run_log: Callable[[], RunLog], host: str, port: int) -> None:
    """Serve the run view over ``run_log()`` on ``host``:``port`` until interrupted.

    Raises:
        UserError: the port is in use.
    """
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"crewbox web: http://{shown}:{port}/ (Ctrl-C stops it)", flush=True)
    config = uvicorn.Config(create_app(run_log), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
