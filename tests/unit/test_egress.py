"""The egress proxy on loopback: tunnels to an allowed destination, refuses the rest
before connecting anywhere."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from crewbox.egress import EgressProxy, allowed_destinations, connect_target


class Echo(socketserver.BaseRequestHandler):
    """Counts connections; echoes what it gets."""

    connections = 0

    def handle(self) -> None:
        type(self).connections += 1
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    Echo.connections = 0
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def start_proxy(allowed: set[str], proxy: EgressProxy | None = None) -> int:
    """``proxy`` (or one for ``allowed``) on an ephemeral loopback port, in a daemon thread;
    returns the port."""
    ready = threading.Event()
    port: list[int] = []
    handler = (proxy or EgressProxy(allowed)).handle

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    assert ready.wait(5)
    return port[0]


def ask(proxy_port: int, head: str) -> tuple[socket.socket, str]:
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
    sock.sendall(head.encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(1024)
        if not chunk:
            break
        reply += chunk
    return sock, reply.decode().split("\r\n", 1)[0]


def test_an_allowed_destination_gets_a_tunnel(echo: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="crewbox.egress")
    proxy = start_proxy({f"127.0.0.1:{echo}"})
    sock, status = ask(proxy, f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 Connection Established"
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    sock.close()
    # the log names who opened the tunnel and where to (the cluster e2e test reads it)
    assert f"tunnel from 127.0.0.1 to 127.0.0.1:{echo}" in caplog.messages


def test_any_other_destination_is_refused_without_a_connection(echo: int) -> None:
    proxy = start_proxy({"api.anthropic.com:443"})
    sock, status = ask(proxy, f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 403 Forbidden"
    assert sock.recv(10) == b""  # closed
    assert Echo.connections == 0


def test_a_plain_http_request_is_refused(echo: int) -> None:
    proxy = start_proxy({f"127.0.0.1:{echo}"})
    _, status = ask(proxy, f"GET http://127.0.0.1:{echo}/ HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert Echo.connections == 0


def test_allowed_destinations_come_from_the_base_url_and_the_list() -> None:
    got = allowed_destinations("https://Gateway.example:8443/v1", " a.example:443 ,")
    assert got == {"api.anthropic.com:443", "gateway.example:8443", "a.example:443"}
    assert allowed_destinations("http://proxy.example", None) >= {"proxy.example:80"}


@pytest.mark.parametrize(
    "head",
    [b"GET / HTTP/1.1\r\n\r\n", b"CONNECT nohost HTTP/1.1\r\n\r\n", b"CONNECT a:b HTTP/1.1\r\n"],
)
def test_only_well_formed_connect_lines_name_a_target(head: bytes) -> None:
    assert connect_target(head) is None


def test_the_anthropic_client_goes_through_the_proxy_and_is_refused_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """crewbox's Anthropic client (the real SDK) honours HTTPS_PROXY, as the cluster's
    services do: a destination the proxy does not allow fails at the proxy, unreached."""
    from crewbox.errors import LLMAPIError
    from crewbox.llm.anthropic import AnthropicClient
    from crewbox.llm.base import Message, SystemBlock

    proxy = EgressProxy({"api.anthropic.com:443"})
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{start_proxy(set(), proxy)}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = AnthropicClient("sk-test", "claude-sonnet-4-6", "https://blocked.example", 10)
    with pytest.raises(LLMAPIError):
        client.complete(
            system=[SystemBlock(text="s")], messages=[Message(role="user", content="hi")]
        )
    assert proxy.refused == ["blocked.example:443"]


def raw(proxy_port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection to the proxy from ``source`` (any 127.x address is loopback on Linux)."""
    return socket.create_connection(
        ("127.0.0.1", proxy_port), timeout=5, source_address=(source, 0)
    )


def status_of(sock: socket.socket) -> str:
    reply = b""
    while b"\r\n" not in reply and (chunk := sock.recv(1024)):
        reply += chunk
    return reply.decode().split("\r\n", 1)[0]


def test_a_client_that_sends_no_head_is_cut_at_the_head_timeout(echo: int) -> None:
    proxy = start_proxy(set(), EgressProxy({f"127.0.0.1:{echo}"}, head_timeout_s=0.3))
    sock = raw(proxy)
    sock.sendall(b"CONNECT 127.0.0.1")  # half a request line, then nothing
    assert status_of(sock) == "HTTP/1.1 408 Request Timeout"
    assert sock.recv(10) == b""
    assert Echo.connections == 0


def test_one_clients_flood_of_half_open_requests_does_not_starve_another(echo: int) -> None:
    egress = EgressProxy({f"127.0.0.1:{echo}"}, per_client=5, max_connections=12)
    proxy = start_proxy(set(), egress)
    flood = [raw(proxy) for _ in range(5)]  # idle: no head, held open
    extra = [raw(proxy) for _ in range(20)]  # beyond the cap: refused at once
    assert {status_of(s) for s in extra} == {"HTTP/1.1 429 Too Many Requests"}
    other, status = ask_from(proxy, f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n", "127.0.0.2")
    assert status == "HTTP/1.1 200 Connection Established"
    other.sendall(b"ping")
    assert other.recv(4) == b"ping"
    for s in [*flood, *extra, other]:
        s.close()


def test_all_clients_together_stay_under_the_overall_cap(echo: int) -> None:
    egress = EgressProxy({f"127.0.0.1:{echo}"}, per_client=3, max_connections=4)
    proxy = start_proxy(set(), egress)
    held = [raw(proxy, "127.0.0.2") for _ in range(3)] + [raw(proxy, "127.0.0.3")]
    deadline = time.monotonic() + 5
    while egress.open_by_client.total() < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    late = raw(proxy, "127.0.0.4")
    assert status_of(late) == "HTTP/1.1 503 Service Unavailable"
    assert egress.per_client == 3 and EgressProxy(set(), max_connections=2).per_client == 2
    for s in [*held, late]:
        s.close()


def test_an_idle_tunnel_is_closed_and_a_busy_one_is_not(echo: int) -> None:
    proxy = start_proxy(set(), EgressProxy({f"127.0.0.1:{echo}"}, idle_timeout_s=0.5))
    head = f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n"
    busy, _ = ask(proxy, head)
    idle, _ = ask(proxy, head)
    for _ in range(8):  # 0.8 s of traffic, a byte every 0.1 s
        busy.sendall(b"x")
        assert busy.recv(1) == b"x"
        time.sleep(0.1)
    assert idle.recv(10) == b""  # closed by the proxy
    busy.sendall(b"y")
    assert busy.recv(1) == b"y"
    busy.close()


def ask_from(proxy_port: int, head: str, source: str) -> tuple[socket.socket, str]:
    sock = raw(proxy_port, source)
    sock.sendall(head.encode())
    return sock, status_of(sock)


def test_the_connection_cap_stays_below_the_descriptor_limit() -> None:
    import resource

    from crewbox.egress import DESCRIPTOR_RESERVE, descriptor_cap

    cap = descriptor_cap()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 2 * cap + DESCRIPTOR_RESERVE <= soft
