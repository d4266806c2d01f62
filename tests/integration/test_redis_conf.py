"""The redis.conf `make up` writes (crewbox.acl), on a real redis-server in a container:
transactions survive a restart (AOF replay), maxmemory refuses writes instead of dying, the
compose healthcheck fails while Redis is BUSY, and a persona's user runs exactly the
commands README.md lists."""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from rq import Queue
from rq.serializers import JSONSerializer

from crewbox import acl
from tests.conftest import ROOT
from tests.integration.conftest import docker_answers

pytestmark = pytest.mark.integration

PERSONAS = ["marie", "anga"]


@dataclass
class ConfRedis:
    """A redis-server container started with the generated redis.conf."""

    name: str
    secrets_dir: Path

    def url(self) -> str:
        out = docker("port", self.name, "6379/tcp").splitlines()[0]
        host, port = out.rsplit(":", 1)
        return f"redis://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/0"

    def as_user(self, user: str) -> redis.Redis:
        if user == "testadmin":
            return redis.Redis.from_url(self.url(), username=user, password=user)
        password = (self.secrets_dir / "redis" / f"{user}.password").read_text().strip()
        return redis.Redis.from_url(self.url(), username=user, password=password)

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.as_user("orchestrator").ping():
                    return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def restart(self, kill: bool = False) -> None:
        if kill:
            docker("kill", self.name)
            docker("start", self.name)
        else:
            docker("restart", self.name)
        self.wait_ready()


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def redis_image() -> str:
    import os

    return os.environ.get("CREWBOX_REDIS_IMAGE", "redis:7-alpine")


@pytest.fixture
def conf_redis(tmp_path: Path) -> Iterator[ConfRedis]:
    """Redis with the generated conf (maxmemory 32mb; Lua counts as BUSY after 200 ms),
    its AOF on a volume of its own."""
    if not docker_answers():
        pytest.skip("needs a Docker engine")
    conf = acl.write_redis_conf(tmp_path / "secrets", PERSONAS, maxmemory="32mb")
    admin = "user testadmin on >testadmin ~* &* +@all\n"  # for ACL DRYRUN, SCRIPT KILL
    conf.write_text(conf.read_text() + "lua-time-limit 200\n" + admin)
    name = f"crewbox-test-redis-{secrets.token_hex(4)}"
    docker(
        "run", "-d", "--name", name, "-p", "127.0.0.1::6379", "-v", f"{conf}:/r.conf:ro",
        "-v", f"{name}:/data", redis_image(), "redis-server", "/r.conf",
    )  # fmt: skip
    server = ConfRedis(name, tmp_path / "secrets")
    try:
        server.wait_ready()
        yield server
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", name], capture_output=True, check=False)


def test_transactions_and_scripts_survive_a_restart_and_a_kill(conf_redis: ConfRedis) -> None:
    orchestrator = conf_redis.as_user("orchestrator")
    for i in range(50):
        pipe = orchestrator.pipeline()  # MULTI/EXEC, as RQ and the run log write
        pipe.set(f"crewbox:run:r{i}:request", "{}").zadd("crewbox:runs", {f"r{i}": i})
        pipe.execute()
    orchestrator.eval("redis.call('SET', KEYS[1], 'x')", 1, "crewbox:run:lua:owner")
    Queue("marie", connection=orchestrator, serializer=JSONSerializer).enqueue("crewbox:task", "{}")
    conf_redis.restart()
    orchestrator = conf_redis.as_user("orchestrator")
    assert orchestrator.zcard("crewbox:runs") == 50
    assert orchestrator.get("crewbox:run:lua:owner") == b"x"
    assert orchestrator.llen("rq:queue:marie") == 1
    orchestrator.set("crewbox:run:after:request", "{}")
    conf_redis.restart(kill=True)  # at once: an acknowledged write is in the AOF already
    assert conf_redis.as_user("orchestrator").zcard("crewbox:runs") == 50
    assert conf_redis.as_user("orchestrator").exists("crewbox:run:after:request")


def test_nobody_logs_in_as_default(conf_redis: ConfRedis) -> None:
    anonymous = redis.Redis.from_url(conf_redis.url())
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(conf_redis.url(), username="default", password="x").ping()


def test_past_maxmemory_writes_fail_and_redis_stays_up(conf_redis: ConfRedis) -> None:
    orchestrator = conf_redis.as_user("orchestrator")
    orchestrator.set("crewbox:run:kept:request", "{}")
    chunk = "x" * (4 << 20)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(20):  # 80 MB into 32 MB
            orchestrator.set(f"crewbox:run:big:{i}", chunk)
    assert orchestrator.get("crewbox:run:kept:request") == b"{}"  # nothing evicted


def healthcheck_command() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test: list[str] = compose["services"]["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return ["sh", "-c", test[1]]


def healthcheck_passes(conf_redis: ConfRedis) -> bool:
    probe = subprocess.run(
        ["docker", "exec", conf_redis.name, *healthcheck_command()],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def test_the_healthcheck_fails_while_a_script_holds_redis_busy(conf_redis: ConfRedis) -> None:
    assert healthcheck_passes(conf_redis)
    orchestrator = conf_redis.as_user("orchestrator")
    looping = threading.Thread(target=_loop_forever, args=(orchestrator,), daemon=True)
    looping.start()
    time.sleep(0.6)  # past lua-time-limit: every other client gets BUSY
    try:
        assert not healthcheck_passes(conf_redis)
    finally:
        conf_redis.as_user("testadmin").script_kill()
    looping.join(5)
    assert healthcheck_passes(conf_redis)


def _loop_forever(connection: redis.Redis) -> None:
    """A Lua script that never ends (until SCRIPT KILL): Redis answers BUSY to the others."""
    with contextlib.suppress(redis.exceptions.RedisError):
        connection.eval("while true do end", 0)


# -- what a persona's user may run ----------------------------------------------------------


def all_commands(admin: redis.Redis) -> dict[str, int]:
    """Every command and subcommand of the server (``config|get``) -> its arity."""
    found: dict[str, int] = {}
    for name, info in admin.command().items():  # redis-py's parse of COMMAND
        found[_text(name)] = int(info["arity"])
        for sub in info.get("subcommands") or []:
            found[_text(sub[0])] = int(sub[1])
    return found


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def persona_may_run(admin: redis.Redis, persona: str) -> set[str]:
    """The commands ACL DRYRUN lets ``persona`` run (on a key and channel it owns)."""
    return may_run(admin, persona, (f"rq:queue:{persona}", f"rq:pubsub:{persona}.1"))


def may_run(admin: redis.Redis, user: str, targets: tuple[str, ...]) -> set[str]:
    """The commands ACL DRYRUN lets ``user`` run with every argument one of ``targets``."""
    allowed = set()
    for name, arity in all_commands(admin).items():
        words = name.split("|")
        for own in targets:
            args = words + [own] * max(0, abs(arity) - len(words))
            try:
                reply = admin.execute_command("ACL", "DRYRUN", user, *args)
            except redis.exceptions.ResponseError:
                continue
            if _text(reply) == "OK":
                allowed.add(name)
    return allowed


def writing_commands(admin: redis.Redis) -> set[str]:
    """Every command the server flags ``write`` (COMMAND INFO)."""
    return {_text(n) for n, info in admin.command().items() if "write" in info["flags"]}


def test_the_web_user_reads_runs_and_can_write_nothing(conf_redis: ConfRedis) -> None:
    admin = conf_redis.as_user("testadmin")
    run_keys = ("crewbox:runs", "crewbox:run:r1:events", "crewbox:run:r1:summary")
    allowed = may_run(admin, "web", run_keys)
    assert not allowed & writing_commands(admin), sorted(allowed & writing_commands(admin))
    for needed in ("get", "xrange", "zrange", "exists", "ping"):  # what RedisRunLog reads
        assert needed in allowed, needed
    for denied in ("set", "xadd", "del", "expire", "eval", "evalsha", "eval_ro", "fcall_ro",
                   "script|load", "keys", "scan", "randomkey", "dbsize", "info", "publish",
                   "config|get", "client|list", "client|kill", "flushall", "acl|dryrun",
                   "multi", "sort_ro"):  # fmt: skip
        assert denied not in allowed, denied
    elsewhere = may_run(admin, "web", ("rq:queue:marie", "crewbox:limit:marie:x"))
    assert not {"get", "xrange", "zrange", "lrange", "hgetall", "exists"} & elsewhere
    admin.set("crewbox:run:r1:summary", "{}")
    web = conf_redis.as_user("web")
    assert web.get("crewbox:run:r1:summary") == b"{}"
    with pytest.raises(redis.exceptions.NoPermissionError):
        web.set("crewbox:run:r1:summary", "forged")
    with pytest.raises(redis.exceptions.NoPermissionError):
        web.get("rq:queue:marie")


def readme_list() -> set[str]:
    """The commands README.md says a persona's Redis user may run."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- persona-redis-commands -->")[1]
    return set(re.findall(r"`([a-z|_-]+)`", block))


def test_a_persona_runs_exactly_the_commands_the_readme_lists(conf_redis: ConfRedis) -> None:
    admin = conf_redis.as_user("testadmin")
    allowed = persona_may_run(admin, "marie")
    assert allowed <= readme_list(), sorted(allowed - readme_list())
    existing = set(all_commands(admin))
    assert readme_list() & existing == allowed, sorted((readme_list() & existing) - allowed)
    for dangerous in ("eval", "evalsha", "fcall", "script|load", "function|load", "scan",
                      "randomkey", "keys", "info", "pubsub|channels", "publish", "psubscribe",
                      "config|get", "client|list", "client|kill", "flushall", "dbsize",
                      "select", "debug", "monitor", "acl|dryrun", "object|encoding"):  # fmt: skip
        assert dangerous not in allowed, dangerous
    for needed in ("blmove", "lpush", "hset", "zadd", "multi", "exec", "watch", "subscribe"):
        assert needed in allowed, needed


def test_a_result_redis_refuses_fails_its_task_with_the_reason(conf_redis: ConfRedis) -> None:
    from crewbox.models import Result, Task, TaskSpec
    from crewbox.queue.rq import RQQueue, TaskJob
    from tests.conftest import spec

    orchestrator = conf_redis.as_user("orchestrator")
    for i in range(4):  # 16 MB of the 32 MB
        orchestrator.set(f"crewbox:run:other{i}:final", "x" * (4 << 20))
    task = Task(run_id="r", spec=TaskSpec(**spec("t", "marie")), request_text="go")
    huge = "y" * (20 << 20)
    job = TaskJob(
        RQQueue(conf_redis.as_user("marie")),
        "marie",
        lambda t, emit: Result.failed(t, huge, worker="w"),
        "w",
    )
    assert job(task.model_dump_json()) == "failed"
    (raw,) = orchestrator.lrange("crewbox:run:r:inbox", 0, -1)
    pushed = Result.model_validate_json(raw)
    assert "Redis refused the result" in (pushed.error or "") and not pushed.retryable
    assert orchestrator.get("crewbox:run:other0:final")  # nothing evicted, Redis up
