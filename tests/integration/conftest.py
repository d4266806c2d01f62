"""A real Redis for the rq backend: REDIS_URL when set, else a testcontainers Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis

from crewbox import acl


def docker_answers() -> bool:
    """True when a Docker engine answers `docker info`."""
    if not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis to test against; the whole database is flushed before each test."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if not docker_answers():
        pytest.skip("needs REDIS_URL or a Docker engine for testcontainers (.ci/run starts one)")
    from testcontainers.community.redis import RedisContainer

    image = os.environ.get("CREWBOX_REDIS_IMAGE", "redis:7-alpine")
    with RedisContainer(image) as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    """A client on a flushed database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


ACL_PERSONAS = ["marie", "anga", "fabien"]


def acl_password(user: str) -> str:
    """The password the tests give Redis ACL user ``user``."""
    return f"test-{user}-password"


@pytest.fixture
def acl_users(redis_client: redis.Redis) -> list[str]:
    """The cluster's ACL users (crewbox.acl's rules) installed on the test Redis, each with
    acl_password(user); the test's own client stays the unrestricted ``default`` user."""
    users = [*acl.SERVICE_USERS, *ACL_PERSONAS]
    for user in users:
        tokens = ["reset", "on", f">{acl_password(user)}", *acl.rules(user)]
        redis_client.execute_command("ACL", "SETUSER", user, *tokens)
    redis_client.acl_log_reset()
    return users


def acl_denials(client: redis.Redis) -> list[str]:
    """What ACL LOG recorded: ``user: reason object`` per denial."""
    return [f"{e['username']}: {e['reason']} {e['object']}" for e in client.acl_log()]
