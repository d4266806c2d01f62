"""The cluster's egress proxy: the one way out of its internal networks.

An HTTP proxy that serves only ``CONNECT host:port`` (the way httpx, and so the Anthropic
SDK, tunnels HTTPS through ``HTTPS_PROXY``) and only to the destinations it allows: the
Anthropic API (``api.anthropic.com:443``), the host of ``ANTHROPIC_BASE_URL`` when set, and
any ``host:port`` listed in ``CREWBOX_EGRESS_ALLOW`` (comma separated). Anything else gets
``403`` before any connection is opened; a request that is not CONNECT gets ``405``. It
never sees the traffic inside a tunnel (TLS end to end) nor any key. Each tunnel is logged
(INFO) as ``tunnel from <client address> to <host:port>``, so which container went where
can be read back from ``docker compose logs egress``.

Shared fairly (one persona cannot starve the others): a client has HEAD_TIMEOUT_S to send
its request head (else ``408``); each client address may hold at most ``per_client``
connections at once (``429`` beyond), and all clients together at most ``max_connections``
(``503`` beyond), a cap kept below the descriptor limit (each tunnel takes two); a tunnel
with no byte either way for ``idle_timeout_s`` is closed. Refusals close the connection at
once, so a flood costs the proxy no lasting descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections import Counter
from typing import Any
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

HEAD_TIMEOUT_S = 10.0
"""How long a client may take to send its whole request head, in seconds."""

IDLE_TIMEOUT_S = 900.0
"""A tunnel with no byte either way for this long is closed (seconds): longer than an LLM
call may stay silent (CREWBOX_LLM_TIMEOUT_S, 600 s by default)."""

PER_CLIENT_CONNECTIONS = 256
"""Connections one client address may hold at once (a worker makes a few per call)."""

DESCRIPTOR_RESERVE = 64
"""Descriptors kept out of the connection cap: the listener, logs, the event loop."""

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


def descriptor_cap() -> int:
    """Connections the proxy can hold: each tunnel takes two descriptors, so half of the
    soft RLIMIT_NOFILE (raised to the hard limit first) less DESCRIPTOR_RESERVE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return max(1, (soft - DESCRIPTOR_RESERVE) // 2)


class EgressProxy:
    """The proxy for a set of allowed destinations (see the module docstring);
    ``refused`` lists the ``host:port`` of every CONNECT it refused, oldest first.

    ``max_connections`` None: :func:`descriptor_cap`. ``per_client`` is lowered to
    ``max_connections`` when above it.
    """

    def __init__(
        self,
        allowed: set[str],
        *,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        per_client: int = PER_CLIENT_CONNECTIONS,
        max_connections: int | None = None,
    ) -> None:
        self.allowed = allowed
        self.refused: list[str] = []
        self.head_timeout_s = head_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections or descriptor_cap()
        self.per_client = min(per_client, self.max_connections)
        self.open_by_client: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: refuse it, or tunnel it to an allowed destination."""
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        refusal = self._over_cap(client)
        if refusal is not None:
            log.warning("refused %s: %s", client, refusal)
            await _reply(writer, refusal)
            return
        self.open_by_client[client] += 1
        try:
            await self._serve(reader, writer, peer)
        finally:
            self.open_by_client[client] -= 1
            if not self.open_by_client[client]:
                del self.open_by_client[client]

    def _over_cap(self, client: str) -> str | None:
        """The status refusing one more connection of ``client``, or None to accept it."""
        if self.open_by_client[client] >= self.per_client:
            return "429 Too Many Requests"
        if self.open_by_client.total() >= self.max_connections:
            return "503 Service Unavailable"
        return None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_timeout_s)
        except TimeoutError:
            log.warning("refused %s: no request head within %.0fs", peer, self.head_timeout_s)
            await _reply(writer, "408 Request Timeout")
            return
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
        await self._tunnel(reader, writer, target, peer)

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: str,
        peer: object,
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
        client = peer[0] if isinstance(peer, tuple) else peer
        log.info("tunnel from %s to %s", client, target)
        await splice((reader, writer), (up_reader, up_writer), self.idle_timeout_s)

    async def serve(self, host: str, port: int) -> None:
        """Listen on ``host:port`` until cancelled."""
        server = await asyncio.start_server(self.handle, host, port, limit=HEAD_LIMIT_BYTES)
        log.info(
            "egress proxy on %s:%d; allowed: %s; at most %d connections, %d per client",
            host,
            port,
            ", ".join(sorted(self.allowed)),
            self.max_connections,
            self.per_client,
        )
        async with server:
            await server.serve_forever()


class IdleClock:
    """When a tunnel last carried a byte (``time.monotonic()``), either way."""

    def __init__(self) -> None:
        self.last_m = time.monotonic()

    def touch(self) -> None:
        """A byte went through now."""
        self.last_m = time.monotonic()

    async def watch(self, pipes: asyncio.Future[Any], idle_timeout_s: float) -> None:
        """Wait for ``pipes`` to end; cancel them once idle for ``idle_timeout_s``."""
        while not pipes.done():
            left_s = self.last_m + idle_timeout_s - time.monotonic()
            if left_s <= 0:
                log.info("tunnel idle for %.0fs: closed", idle_timeout_s)
                pipes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pipes
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pipes), left_s)


async def _reply(writer: asyncio.StreamWriter, status: str) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
    writer.close()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def splice(client: Stream, upstream: Stream, idle_timeout_s: float) -> None:
    """Copy bytes both ways between ``client`` and ``upstream`` until both ends close or
    neither sends for ``idle_timeout_s``; then close both writers (the egress proxy's
    tunnels and the worker host's Redis relay)."""
    clock = IdleClock()
    pipes = asyncio.gather(pipe(client[0], upstream[1], clock), pipe(upstream[0], client[1], clock))
    try:
        await clock.watch(pipes, idle_timeout_s)
    finally:
        for w in (client[1], upstream[1]):
            with contextlib.suppress(ConnectionError, RuntimeError):
                w.close()


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: IdleClock
) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then close ``writer``."""
    try:
        while chunk := await reader.read(_CHUNK_BYTES):
            clock.touch()
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()
