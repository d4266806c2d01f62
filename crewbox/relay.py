"""A worker host's way to the cluster's Redis: a TCP relay to one ``host:port``.

A worker host (``make worker-host``, README "More than one machine") keeps its workers on
internal networks, as the cluster does: they reach the Anthropic API through the egress
proxy and Redis through this relay, which sits on their networks and outside, and forwards
every connection to the one destination it was started with, nothing else. TLS stays end
to end: the relay passes bytes it cannot read, and the worker checks Redis's certificate
against the host name of its ``rediss://`` URL (which, on the worker's network, names the
relay). The same caps as the egress proxy (crewbox.egress): connections per client
address, in all, and a connection idle either way for ``idle_timeout_s`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from crewbox.egress import (
    CONNECT_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    PER_CLIENT_CONNECTIONS,
    descriptor_cap,
    splice,
)

log = logging.getLogger("crewbox.relay")


class Relay:
    """Forward each connection to ``host``:``port`` (at most ``per_client`` per client
    address and ``max_connections`` in all; beyond, the connection is closed at once)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        per_client: int = PER_CLIENT_CONNECTIONS,
        max_connections: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections or descriptor_cap()
        self.per_client = min(per_client, self.max_connections)
        self.open_by_client: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one client connection, or close it when over a cap or the destination
        cannot be reached within CONNECT_TIMEOUT_S."""
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        busy = self.open_by_client[client] >= self.per_client
        if busy or self.open_by_client.total() >= self.max_connections:
            log.warning("refused %s: too many connections", client)
            writer.close()
            return
        self.open_by_client[client] += 1
        try:
            await self._forward(reader, writer)
        finally:
            self.open_by_client[client] -= 1
            if not self.open_by_client[client]:
                del self.open_by_client[client]

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot reach %s:%d: %s", self.host, self.port, exc)
            writer.close()
            return
        await splice((reader, writer), (up_reader, up_writer), self.idle_timeout_s)

    async def serve(self, listen_host: str, listen_port: int) -> None:
        """Listen on ``listen_host:listen_port`` until cancelled."""
        server = await asyncio.start_server(self.handle, listen_host, listen_port)
        log.info("relay %s:%d -> %s:%d", listen_host, listen_port, self.host, self.port)
        async with server:
            await server.serve_forever()


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` as (host, port).

    Raises:
        ValueError: not ``host:port`` with a port in 1..65535.
    """
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (e.g. redis.example:6380)")
    return host.strip("[]"), int(port)
