"""The way out of a cluster container, on loopback and without Docker: crewbox's Anthropic
client (the real SDK) with ``HTTPS_PROXY`` naming the egress proxy (crewbox.egress) and
``SSL_CERT_FILE`` naming a test CA, calling a scripted HTTPS Messages endpoint
(tests/fakes/messages_service.py) through a CONNECT tunnel. The cluster e2e test
(tests/e2e/test_claude_code_cluster.py) runs the same path between containers; this one
shows each refusal cheaply. About 0.5 s for the three tests (imports aside).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from crewbox.egress import EgressProxy
from crewbox.errors import LLMAPIError
from crewbox.llm.anthropic import AnthropicClient
from crewbox.llm.base import Message
from crewbox.testing import ScriptedLLM, recorded_calls
from tests.fakes.messages_service import ScriptedEndpoint, auth_records, serve, write_test_ca
from tests.unit.test_egress import start_proxy

KEY = "sk-ant-egress-path-test"
MODEL = "claude-sonnet-4-6"
STEPS = [{"match": "hello", "text": "hi", "usage": {"input_tokens": 12, "output_tokens": 3}}]


@dataclass
class Route:
    """The endpoint's URL and records, the test CA, and the proxy's port and state."""

    url: str
    record: Path
    ca: Path
    proxy: EgressProxy
    proxy_port: int


@pytest.fixture
def route(tmp_path: Path) -> Iterator[Route]:
    """The scripted endpoint on localhost (HTTPS, a certificate of a new CA) and an egress
    proxy allowing only it."""
    ca = write_test_ca(tmp_path / "tls", "localhost")
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(STEPS))
    record = tmp_path / "record"
    llm = ScriptedLLM.from_file(tmp_path / "script.yaml", record_dir=record)
    server = serve(ScriptedEndpoint(llm, record), tmp_path / "tls" / "server.pem", 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    port = server.server_address[1]
    proxy = EgressProxy({f"localhost:{port}"})
    try:
        yield Route(f"https://localhost:{port}", record, ca, proxy, start_proxy(set(), proxy))
    finally:
        server.shutdown()
        server.server_close()


def call(url: str) -> str:
    """One call of crewbox's Anthropic client to ``url``; the answer's text."""
    client = AnthropicClient(api_key=KEY, model=MODEL, base_url=url, timeout_s=10)
    return client.complete(system=[], messages=[Message(role="user", content="hello")]).text


@pytest.fixture
def through_proxy(route: Route, monkeypatch: pytest.MonkeyPatch) -> Route:
    """The environment a cluster container has: HTTPS_PROXY, the CA in SSL_CERT_FILE."""
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{route.proxy_port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(route.ca))
    return route


def test_a_call_crosses_the_proxy_in_a_tunnel_with_the_key(
    through_proxy: Route, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="crewbox.egress")
    assert call(through_proxy.url) == "hi"
    (auth,) = auth_records(through_proxy.record)
    assert (auth.key, auth.header) == (KEY, "authorization")  # the SDK sends it as a Bearer
    assert [c.usage.input_tokens for c in recorded_calls(through_proxy.record)] == [12]
    port = through_proxy.url.rsplit(":", 1)[1]
    assert f"tunnel from 127.0.0.1 to localhost:{port}" in caplog.messages


def test_a_destination_the_proxy_does_not_allow_is_a_clear_error(through_proxy: Route) -> None:
    port = through_proxy.url.rsplit(":", 1)[1]
    with pytest.raises(LLMAPIError) as caught:
        call(f"https://127.0.0.1:{port}")  # the same server by another name: not allowed
    assert f"127.0.0.1:{port} failed: 403" in str(caught.value), caught.value
    assert "make logs-egress" in str(caught.value)
    assert through_proxy.proxy.refused == [f"127.0.0.1:{port}"]
    assert auth_records(through_proxy.record) == []


def test_an_endpoint_of_an_untrusted_ca_is_refused(
    through_proxy: Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(LLMAPIError) as caught:
        call(through_proxy.url)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value), caught.value
    assert auth_records(through_proxy.record) == []  # the key never left
