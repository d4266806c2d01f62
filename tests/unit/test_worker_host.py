"""What `make worker-host` and `make up REDIS_TLS_PORT=...` generate, and the pieces a
worker host runs: the compose file (crewbox.cluster worker-host), the Redis relay
(crewbox.relay), the TLS lines of redis.conf, the settings of a rediss:// or Sentinel
Redis, and the host name a worker registers with."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest
import yaml

from crewbox import acl
from crewbox.cluster import ClusterError, main, parse_redis_url, worker_host
from crewbox.config import Settings
from crewbox.errors import QueueError
from crewbox.queue.rq_worker import container_of, registered_hostname
from crewbox.redis_client import sentinel_nodes, tls_options, where
from crewbox.relay import Relay, parse_address
from tests.conftest import ROOT
from tests.unit.test_egress import Echo, echo  # noqa: F401  (fixture)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker host's checkout with anga's password and the CA copied over, and a key."""
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "workspaces", tmp_path / "workspaces")
    for name in ("redis/anga.password", "tls/ca.crt", "anga.key"):
        (tmp_path / "secrets" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "secrets" / name).write_text(f"{name} content\n")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "crewbox-worker-host-unit-test")
    return tmp_path


def test_the_worker_host_file_boxes_each_worker_and_reaches_redis_through_the_relay(
    project: Path,
) -> None:
    path = worker_host(project, ["anga"], "rediss://cluster.example:7000/0")
    spec = yaml.safe_load(path.read_text())
    anga, relay = spec["services"]["anga"], spec["services"]["redis-relay"]
    assert anga["extends"] == {"file": "worker-host-base.yml", "service": "worker-template"}
    assert anga["networks"] == ["net-anga"]
    assert spec["networks"]["net-anga"]["internal"] is True
    relay_ip = relay["networks"]["net-anga"]["ipv4_address"]
    assert anga["extra_hosts"] == [f"cluster.example:{relay_ip}"]
    assert relay["command"][-1] == "cluster.example:7000"
    assert anga["environment"]["CREWBOX_REDIS_URL"] == "rediss://cluster.example:7000/0"
    assert anga["environment"]["CREWBOX_REDIS_USERNAME"] == "anga"
    assert {s["target"] for s in anga["secrets"]} == {"redis_ca", "redis_password", "anga_key"}
    assert "marie" not in spec["services"]
    assert (project / "secrets" / "resolved" / "anga.key").stat().st_mode & 0o777 == 0o600


def test_an_ip_address_is_reached_under_the_name_the_certificate_carries(project: Path) -> None:
    spec = yaml.safe_load(worker_host(project, ["anga"], "rediss://10.0.0.5").read_text())
    anga = spec["services"]["anga"]
    assert anga["environment"]["CREWBOX_REDIS_URL"] == "rediss://redis:6380/0"
    assert anga["extra_hosts"][0].startswith("redis:")
    assert spec["services"]["redis-relay"]["command"][-1] == "10.0.0.5:6380"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://cluster.example:6379", "give the cluster's TLS address"),
        ("rediss://anga:secret@cluster.example", "holds credentials"),
        ("", "give the cluster's TLS address"),
    ],
)
def test_a_redis_url_that_cannot_serve_is_refused(url: str, expected: str) -> None:
    with pytest.raises(ClusterError, match=expected):
        parse_redis_url(url)


def test_missing_files_are_named_with_where_to_get_them(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "secrets" / "tls" / "ca.crt").unlink()
    (project / "secrets" / "anga.key").unlink()
    argv = ["worker-host", "--project", str(project), "--redis-url", "rediss://h", "anga"]
    assert main(argv) == 2
    assert "missing secrets/tls/ca.crt: copy them from the first machine" in capsys.readouterr().err
    (project / "secrets" / "tls" / "ca.crt").write_text("ca")
    assert main(argv) == 2
    assert "no Anthropic key for anga" in capsys.readouterr().err
    assert main([*argv[:-1], "nobody"]) == 2
    assert "no persona 'nobody'" in capsys.readouterr().err


def test_claude_code_personas_are_refused_in_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWBOX_ENGINE", "claude-code")
    with pytest.raises(ClusterError, match="anga: the claude-code engine is not served"):
        worker_host(project, ["anga"], "rediss://cluster.example")


def test_redis_conf_serves_tls_only_when_asked(tmp_path: Path) -> None:
    plain = acl.write_redis_conf(tmp_path / "a", ["anga"]).read_text()
    tls = acl.write_redis_conf(tmp_path / "b", ["anga"], tls=True).read_text()
    assert "tls-port" not in plain
    assert "tls-port 6380\n" in tls and "tls-auth-clients no\n" in tls
    assert tls.count("\nuser ") == plain.count("\nuser ")  # the same ACL users


def test_tls_and_sentinel_settings() -> None:
    ca = Path("/run/secrets/redis_ca")
    assert tls_options(Settings(redis_url="rediss://h:1/0", redis_ca_file=ca)) == {
        "ssl_ca_certs": str(ca)
    }
    assert tls_options(Settings(redis_url="redis://h:1/0", redis_ca_file=ca)) == {}
    assert sentinel_nodes("s1:26379, s2:26380") == [("s1", 26379), ("s2", 26380)]
    with pytest.raises(QueueError, match="'s3' is not host:port"):
        sentinel_nodes("s1:26379,s3")
    sentinel = Settings(redis_sentinels="s1:26379", redis_sentinel_master="main")
    assert where(sentinel) == "sentinels s1:26379 (master main)"
    assert where(Settings(redis_url="rediss://u:pw@h:7000/2")) == "rediss://h:7000"


def test_a_worker_registers_with_its_machine_and_its_container() -> None:
    assert registered_hostname("host-b", "3f2a1c") == "host-b/3f2a1c"
    assert registered_hostname("", "3f2a1c") == "3f2a1c"
    assert container_of("host-b/3f2a1c") == container_of("3f2a1c") == "3f2a1c"


def start_relay(relay: Relay) -> int:
    """``relay`` on an ephemeral loopback port in a daemon thread; returns the port."""
    import asyncio

    ready, port = threading.Event(), []

    async def serve() -> None:
        server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    assert ready.wait(5)
    return port[0]


def test_the_relay_carries_bytes_to_its_one_destination_within_its_caps(echo: int) -> None:  # noqa: F811
    port = start_relay(Relay("127.0.0.1", echo, per_client=1))
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    first.sendall(b"\x16\x03\x01 any bytes")  # e.g. a TLS hello: passed on as it is
    assert first.recv(64) == b"\x16\x03\x01 any bytes"
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert second.recv(64) == b""  # over the per-client cap: closed at once
    assert Echo.connections == 1
    first.close()
    second.close()


def test_the_relay_refuses_a_malformed_address() -> None:
    assert parse_address("redis.example:6380") == ("redis.example", 6380)
    for bad in ("redis.example", "h:0", "h:99999", ":6380"):
        with pytest.raises(ValueError, match="is not host:port"):
            parse_address(bad)
