"""Redis's TLS port as `make up REDIS_TLS_PORT=...` configures it (crewbox.acl's TLS_CONF,
scripts/make-certs.sh's certificates) on a real redis-server: plain text and a wrong ACL
password are refused there, the ACL users are the same as on the plain port, and a worker
pointed at a wrong address or protocol says so in one line and exits (not
``internal error: ConnectionError ... [SSL: WRONG_VERSION_NUMBER]``, retried for ever).
About 10 s with the image cached."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from crewbox import acl
from crewbox.config import Settings
from crewbox.errors import QueueError
from crewbox.redis_client import check_redis
from tests.conftest import ROOT
from tests.integration.conftest import docker_answers

pytestmark = pytest.mark.integration


@dataclass
class TLSRedis:
    """A redis-server with the generated redis.conf, TLS on ``tls_port``, plain text on
    ``plain_port`` (both on 127.0.0.1), and the project folder holding its secrets."""

    project: Path
    plain_port: int
    tls_port: int

    def password(self, user: str) -> str:
        return (self.project / "secrets" / "redis" / f"{user}.password").read_text().strip()

    def ca(self) -> Path:
        return self.project / "secrets" / "tls" / "ca.crt"

    def settings(self, url: str, user: str = "anga", **more: object) -> Settings:
        fields: dict[str, object] = {"redis_password": self.password(user), **more}
        return Settings(queue="rq", redis_url=url, redis_username=user, **fields)  # type: ignore[arg-type]


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def published(name: str, port: int) -> int:
    return int(docker("port", name, f"{port}/tcp").splitlines()[0].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    if not docker_answers() or not shutil.which("openssl"):
        pytest.skip("needs a Docker engine and openssl")
    project = tmp_path_factory.mktemp("tls")
    (project / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "make-certs.sh", project / "scripts")
    subprocess.run([project / "scripts" / "make-certs.sh"], check=True, capture_output=True)
    conf = acl.write_redis_conf(project / "secrets", ["marie", "anga"], tls=True)
    tls = project / "secrets" / "tls"
    name = f"crewbox-test-tls-{secrets.token_hex(4)}"
    mounts = [f"{conf}:/r.conf:ro"]
    for file, target in (("redis.crt", "cert"), ("redis.key", "key"), ("ca.crt", "ca")):
        mounts.append(f"{tls / file}:/run/secrets/redis_tls_{target}:ro")
    docker(
        "run", "-d", "--name", name, "-p", "127.0.0.1::6379", "-p", f"127.0.0.1::{acl.TLS_PORT}",
        "--tmpfs", "/data", *(a for m in mounts for a in ("-v", m)),
        os.environ.get("CREWBOX_REDIS_IMAGE", "redis:7-alpine"), "redis-server", "/r.conf",
    )  # fmt: skip
    try:
        server = TLSRedis(project, published(name, 6379), published(name, acl.TLS_PORT))
        check_redis(server.settings(f"redis://127.0.0.1:{server.plain_port}/0"), timeout_s=30)
        yield server
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_the_tls_port_serves_the_same_acl_users_with_the_cluster_ca(tls_redis: TLSRedis) -> None:
    anga = redis.Redis(
        host="localhost",  # a name the certificate carries, checked (redis-py's default)
        port=tls_redis.tls_port,
        ssl=True,
        ssl_ca_certs=str(tls_redis.ca()),
        username="anga",
        password=tls_redis.password("anga"),
    )
    assert anga.ping()
    anga.rpush("rq:queue:anga", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):  # marie's queue, as on 6379
        anga.lpop("rq:queue:marie")


def test_plain_text_on_the_tls_port_is_refused(tls_redis: TLSRedis) -> None:
    plain = redis.Redis(
        port=tls_redis.tls_port, username="anga", password=tls_redis.password("anga")
    )
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()


def test_a_wrong_acl_password_on_the_tls_port_is_refused(tls_redis: TLSRedis) -> None:
    url = f"rediss://localhost:{tls_redis.tls_port}/0"
    wrong = tls_redis.settings(url, redis_ca_file=tls_redis.ca(), redis_password="not-it")
    with pytest.raises(QueueError, match="refused the password of user anga"):
        check_redis(wrong, timeout_s=5)
    nobody = redis.Redis.from_url(url, ssl_ca_certs=str(tls_redis.ca()))  # user default: off
    with pytest.raises(redis.exceptions.AuthenticationError):
        nobody.ping()


def test_the_startup_check_names_each_wrong_setting_in_one_line(tls_redis: TLSRedis) -> None:
    cases = {
        # rediss:// to the plain-text port
        f"rediss://localhost:{tls_redis.plain_port}/0": "does not speak TLS",
        # redis:// to the TLS port
        f"redis://localhost:{tls_redis.tls_port}/0": "closed the connection at once: is it a TLS",
    }
    ca = tls_redis.ca()
    for url, expected in cases.items():
        with pytest.raises(QueueError, match=expected) as caught:
            check_redis(tls_redis.settings(url, redis_ca_file=ca), timeout_s=5)
        assert "\n" not in str(caught.value)
    untrusted = tls_redis.settings(f"rediss://localhost:{tls_redis.tls_port}/0")  # no CA file
    with pytest.raises(QueueError, match=r"not trusted.*CREWBOX_REDIS_CA_FILE"):
        check_redis(untrusted, timeout_s=5)


def test_a_worker_pointed_at_a_plain_text_port_over_rediss_says_so_and_exits(
    tls_redis: TLSRedis,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CREWBOX_", "ANTHROPIC"))},
        "CREWBOX_QUEUE": "rq",
        "CREWBOX_REDIS_URL": f"rediss://localhost:{tls_redis.plain_port}/0",
        "CREWBOX_REDIS_USERNAME": "anga",
        "CREWBOX_REDIS_PASSWORD": tls_redis.password("anga"),
        "CREWBOX_REDIS_CA_FILE": str(tls_redis.ca()),
        "CREWBOX_PROMPTS_DIR": str(ROOT / "prompts"),
        "CREWBOX_PROVIDER": "scripted",
    }
    done = subprocess.run(
        [sys.executable, "-m", "crewbox", "worker", "--persona", "anga"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("crewbox: error: rediss://localhost:")
    assert "does not speak TLS (it is a plain-text port)" in lines[0]
