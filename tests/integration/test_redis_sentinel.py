"""A Sentinel-managed Redis as crewbox's Redis (CREWBOX_REDIS_SENTINELS,
CREWBOX_REDIS_SENTINEL_MASTER): a real redis-server with the cluster's redis.conf and a
real Sentinel monitoring it; a persona's client finds the master through the Sentinel and
keeps its ACL user. Both on the host's network (Sentinel hands out the master's address as
it sees it). About 5 s with the image cached."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from crewbox import acl
from crewbox.config import Settings
from crewbox.errors import QueueError
from crewbox.queue.rq import RQQueue
from crewbox.redis_client import check_redis, connect
from tests.integration.conftest import docker_answers

pytestmark = pytest.mark.integration

SENTINEL_USER = (
    "user sentinel on >sentinel-pw allchannels +multi +slaveof +ping +exec +subscribe "
    "+config|rewrite +role +publish +info +client|setname +client|kill +script|kill\n"
)
"""The master's user for Sentinel, with the commands redis.io's ACL page lists under "ACL
rules for Sentinel and Replicas"."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(name: str, conf: Path, *args: str) -> None:
    image = os.environ.get("CREWBOX_REDIS_IMAGE", "redis:7-alpine")
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host", "--tmpfs", "/data",
         "--tmpfs", "/tmp", "-v", f"{conf}:/conf/r.conf:ro", image, "sh", "-c",
         f"cp /conf/r.conf /tmp/r.conf && exec redis-server /tmp/r.conf {' '.join(args)}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """(the secrets folder, the Sentinel's port) of a master and its Sentinel."""
    if not docker_answers():
        pytest.skip("needs a Docker engine")
    folder = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = free_port(), free_port()
    conf = acl.write_redis_conf(folder / "secrets", ["anga"])
    conf.write_text(f"{conf.read_text()}port {master_port}\nbind 127.0.0.1\n{SENTINEL_USER}")
    watch = folder / "sentinel.conf"
    watch.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 "
        f"{master_port} 1\nsentinel auth-user mymaster sentinel\n"
        "sentinel auth-pass mymaster sentinel-pw\n"
    )
    names = [
        f"crewbox-test-master-{secrets.token_hex(3)}",
        f"crewbox-test-sentinel-{secrets.token_hex(3)}",
    ]
    try:
        run(names[0], conf)
        run(names[1], watch, "--sentinel")
        yield folder / "secrets", sentinel_port
    finally:
        for name in names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def settings_for(found: tuple[Path, int], master: str = "mymaster") -> Settings:
    folder, port = found
    return Settings(
        queue="rq",
        redis_url="redis:///0",  # with Sentinels, only the scheme and the database count
        redis_sentinels=f"127.0.0.1:{port}",
        redis_sentinel_master=master,
        redis_username="anga",
        redis_password=(folder / "redis" / "anga.password").read_text().strip(),
    )


def test_a_persona_reaches_the_master_through_the_sentinel(
    sentinel: tuple[Path, int],
) -> None:
    cfg = settings_for(sentinel)
    check_redis(cfg, timeout_s=30)
    queue = RQQueue.from_settings(cfg)  # what the worker serves with
    queue.redis.rpush("rq:queue:anga", "job-id")
    assert connect(cfg).llen("rq:queue:anga") == 1
    with pytest.raises(redis.exceptions.NoPermissionError):  # still anga's ACL user
        connect(cfg).llen("rq:queue:marie")


def test_an_unknown_master_name_is_one_line(sentinel: tuple[Path, int]) -> None:
    with pytest.raises(QueueError, match=r"sentinels 127.0.0.1:[0-9]+ \(master nobody\)"):
        check_redis(settings_for(sentinel, master="nobody"), timeout_s=2)
