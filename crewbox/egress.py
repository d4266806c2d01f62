"""The cluster's egress proxy: the one way out of its internal networks.

An HTTP proxy that serves only ``CONNECT host:port`` (the way httpx, and so the Anthropic
SDK, tunnels HTTPS through ``HTTPS_PROXY``) and only to the destinations it allows: the
Anthropic API (``api.anthropic.com:443``), the host of ``ANTHROPIC_BASE_URL`` when set, and
any ``host:port`` listed in ``CREWBOX_EGRESS_ALLOW`` (comma separated). Anything else gets
``403`` before any connection is opened; a request that is not CONNECT gets ``405``. It
never sees the traffic inside a tunnel (TLS end to end) nor any key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

log = logging.getLogger("crewbox.egress")

DEFAULT_ALLOWED = ("api.anthropic.com:443",)
"""Destinations allowed with no configuration: the Anthropic Messages API."""

LISTEN_PORT = 3128
"""The proxy's port (the usual one of HTTP proxies); compose sets HTTPS_PROXY to it."""

HEAD_LIMIT_BYTES = 8192
"""Longest request head read before the request is refused (bytes)."""

CONNECT_TIMEOUT_S = 10.0
"""How long opening the upstream connection may take, in seconds."""

_CHUNK_BYTES = 65536


def allowed_destinations(base_url: str | None, extra: str | None) -> set[str]:
    """``host:port`` destinations (lower case): DEFAULT_ALLOWED, ``base_url``'s host and
    port (443 for https, 80 for http), and every comma-separated entry of ``extra``."""
    allowed = set(DEFAULT_ALLOWED)
    if base_url:
        parts = urlsplit(base_url)
        if parts.hostname:
            default_port = 443 if parts.scheme == "https" else 80
            allowed.add(f"{parts.hostname.lower()}:{parts.port or default_port}")
    allowed.update(item.strip().lower() for item in (extra or "").split(",") if item.strip())
    return allowed


def connect_target(head: bytes) -> str | None:
    """The ``host:port`` of a ``CONNECT host:port HTTP/1.x`` request head; None for any
    other method or a malformed line."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or parts[0].upper() != "CONNECT" or not parts[2].startswith("HTTP/"):
        return None
    host, sep, port = parts[1].rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return f"{host.lower()}:{int(port)}"


class EgressProxy:
    """The proxy for a set of allowed destinations (see the module docstring);
    ``refused`` lists the ``host:port`` of every CONNECT it refused, oldest first."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.refused: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: refuse it, or tunnel it to an allowed destination."""
        peer = writer.get_extra_info("peername")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        target = connect_target(head)
        if target is None:
            log.warning("refused %s: not a CONNECT request", peer)
            await _reply(writer, "405 Method Not Allowed")
            return
        if target not in self.allowed:
            log.warning("refused %s: %s is not an allowed destination", peer, target)
            self.refused.append(target)
            await _reply(writer, "403 Forbidden")
            return
        await self._tunnel(reader, writer, target)

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
    ) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot reach %s: %s", target, exc)
            await _reply(writer, "502 Bad Gateway")
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        log.info("tunnel to %s", target)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def serve(self, host: str, port: int) -> None:
        """Listen on ``host:port`` until cancelled."""
        server = await asyncio.start_server(self.handle, host, port, limit=HEAD_LIMIT_BYTES)
        log.info("egress proxy on %s:%d; allowed: %s", host, port, ", ".join(sorted(self.allowed)))
        async with server:
            await server.serve_forever()


async def _reply(writer: asyncio.StreamWriter, status: str) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then close ``writer``."""
    try:
        while chunk := await reader.read(_CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()
