"""The isolation probe: from inside marie's container, with marie's own credentials, try
what a prompt-injected persona would, and count what the cluster refuses.

The cluster is a copy of the project with ScriptedLLM as every service's LLM (see
tests/e2e/chaos.py). One run holds a slow task of anga's and a task of marie's whose
scripted model calls Bash and Read on the secrets; while anga's task runs, a script run in
marie's container (``docker compose exec marie python``, logged in to Redis as marie) tries
to read anga's queue and job, the run's inbox and events and the requests queue, to enqueue
jobs on anga's queue and the requests queue, and to push a forged result for anga's task.
Marie's own Bash tool, run by her worker, tries to read the secret files, the environment
and the worker's memory, and to reach anga, the orchestrator and the internet.

Usage: ``python -m tests.e2e.probe`` (`make probe`; needs Docker with Compose v2).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crewbox.testing import RecordedCall, recorded_calls
from tests.e2e.chaos import ChaosCluster, task
from tests.e2e.cluster import compose_answers, copy_project, project_name

PROJECT = project_name("crewbox-probe")
ANGA_TASK_S = 15.0
"""How long anga's task takes: the probe runs while it is in flight."""

BASH_PROBE = (
    'for f in /run/secrets/*; do cat "$f" >/dev/null 2>&1 && echo "READ $f" '
    '|| echo "DENIED $f"; done; '
    "env | grep -qiE 'key|password|secret|CREWBOX_' && echo 'ENV LEAKS' || echo 'ENV CLEAN'; "
    "for p in /proc/[0-9]*; do cat $p/environ >/dev/null 2>&1 && [ -s $p/environ ] "
    "&& grep -qa CREWBOX_ $p/environ && echo \"READ $p/environ\"; done; echo 'PROC DONE'; "
    "python3 -c \"import socket\nfor h in ('anga', 'orchestrator'):\n"
    "    try: socket.getaddrinfo(h, 80); print('RESOLVED', h)\n"
    "    except OSError: print('UNRESOLVED', h)\"; "
)
"""What marie's scripted model asks her Bash tool to run."""

PLANS: dict[str, list[dict[str, Any]]] = {
    "probe": [task("anga-slow", "anga"), task("marie-bash", "marie")],
}

INSIDE = r"""
import json, sys, socket
import redis
from rq import Queue
from rq.serializers import JSONSerializer
run, anga_job = sys.argv[1], sys.argv[2]
me = redis.Redis(host="redis", username="marie",
                 password=open("/run/secrets/redis_password").read().strip())
def attempt(name, fn):
    try:
        fn()
        print(json.dumps({"attempt": name, "refused": False, "detail": "allowed"}))
    except redis.exceptions.NoPermissionError as exc:
        print(json.dumps({"attempt": name, "refused": True, "detail": str(exc)[:80]}))
def foreign(queue):
    return lambda: Queue(queue, connection=me, serializer=JSONSerializer).enqueue(
        "subprocess.getoutput", "cat /run/secrets/*")
attempt("read anga's queue", lambda: me.lrange("rq:queue:anga", 0, -1))
attempt("read a job of anga's", lambda: me.hgetall(f"rq:job:{anga_job}"))
attempt("read the run's inbox (results)", lambda: me.lrange(f"crewbox:run:{run}:inbox", 0, -1))
attempt("read the run's events", lambda: me.xrange(f"crewbox:run:{run}:events"))
attempt("read the requests queue", lambda: me.lrange("rq:queue:requests", 0, -1))
attempt("enqueue a job on anga's queue", foreign("anga"))
attempt("enqueue a job on the requests queue", foreign("requests"))
attempt("beat anga's heartbeats", lambda: me.hset(f"crewbox:run:{run}:heartbeats:anga", "x", 1))
attempt("send a command to anga's worker", lambda: me.publish("rq:pubsub:anga.x", "{}"))
forged = {"run_id": run, "task_id": "anga-slow", "persona": "anga", "status": "succeeded",
          "summary": "FORGED by marie", "attempt": 1, "token": "guessed"}
me.rpush(f"crewbox:run:{run}:inbox", json.dumps(forged))
print(json.dumps({"attempt": "push a forged result for anga's task", "pushed": True}))
def egress(host):
    s = socket.create_connection(("egress", 3128), timeout=5)
    s.sendall(f"CONNECT {host} HTTP/1.1\r\n\r\n".encode())
    status = s.recv(100).decode().split("\r\n")[0]
    print(json.dumps({"attempt": f"egress tunnel to {host}", "refused": " 403 " in status,
                      "detail": status}))
egress("example.com:443")
"""
"""Runs in marie's container (as `docker compose exec` does: root, marie's secrets)."""


ACL_INSIDE = r"""
import json, sys
import redis
run = sys.argv[1]
me = redis.Redis(host="redis", username="marie",
                 password=open("/run/secrets/redis_password").read().strip())
def attempt(name, fn):
    try:
        fn()
        print(json.dumps({"attempt": name, "refused": False, "detail": "allowed"}))
    except redis.exceptions.NoPermissionError as exc:
        print(json.dumps({"attempt": name, "refused": True, "detail": str(exc)[:80]}))
attempt("run a Lua script (EVAL: Redis BUSY)", lambda: me.eval("return 1", 0))
attempt("list keys (SCAN)", lambda: me.scan(0))
attempt("pick a random key (RANDOMKEY)", lambda: me.randomkey())
attempt("read the server's INFO", lambda: me.info())
attempt("list channels (PUBSUB CHANNELS)", lambda: me.pubsub_channels())
attempt("open anga's circuit (write its limiter)",
        lambda: me.set("crewbox:limit:anga:x", '{"limit": 1, "open_until_s": 1e12}'))
attempt("zero anga's spend in the run (its ledger)",
        lambda: me.hset(f"crewbox:run:{run}:spend:anga", "run", 0))
"""
"""Runs in marie's container: what her Redis user may not run (crewbox.acl), one row each."""


def redis_acl_attempts(cluster: ChaosCluster, run_id: str) -> list[Attempt]:
    """Run ACL_INSIDE in marie's container; its rows.

    Raises:
        RuntimeError: the script itself failed.
    """
    done = cluster.compose("exec", "-T", "marie", "python", "-c", ACL_INSIDE, run_id)
    if done.returncode != 0:
        raise RuntimeError(f"ACL probe in marie failed: {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [Attempt(r["attempt"], r["refused"], r["detail"]) for r in rows]


@dataclass
class Attempt:
    """One thing marie tried: ``refused`` when the cluster did not let it happen."""

    attempt: str
    refused: bool
    detail: str


def script() -> list[dict[str, Any]]:
    """Scripted answers: anga's slow task; marie's Bash and Read calls, then her answer."""
    bash = {"name": "Bash", "input": {"command": BASH_PROBE}}
    read = {"name": "Read", "input": {"file_path": "/run/secrets/marie_key"}}
    marie = "Task id: marie-bash\\n"
    return [
        {"match": "Task id: anga-slow\\n", "delay_s": ANGA_TASK_S, "text": "anga-slow done"},
        {"match": marie, "text": "probing", "tool_uses": [bash, read]},
        {"match": marie, "text": "marie-bash done"},
        {"match": "## Request", "text": "probe answer"},
    ]


def redis_attempts(cluster: ChaosCluster, run_id: str, anga_job: str) -> list[dict[str, Any]]:
    """Run INSIDE in marie's container; its JSON lines."""
    done = cluster.compose(
        "exec", "-T", "marie", "python", "-c", INSIDE, run_id, anga_job
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"probe in marie failed: {done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def tool_results(call: RecordedCall) -> dict[str, str]:
    """What each tool returned in ``call``, by tool name (from its tool_result blocks)."""
    names = {
        block["id"]: block["name"]
        for message in call.messages
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_use"
    }
    results: dict[str, str] = {}
    for message in call.messages:
        for block in message.get("content") if isinstance(message.get("content"), list) else []:
            if block.get("type") == "tool_result":
                content = block.get("content")
                texts = [c.get("text", "") for c in content] if isinstance(content, list) else []
                results[names.get(block["tool_use_id"], "?")] = (
                    content if isinstance(content, str) else "\n".join(texts)
                )
    return results


def bash_attempts(cluster: ChaosCluster) -> list[Attempt]:
    """What marie's Bash and Read calls returned, from the call that carried their results."""
    found = [tool_results(c) for c in recorded_calls(cluster.chaos / "record")]
    results = next((r for r in reversed(found) if "Bash" in r), None)
    if results is None:
        raise RuntimeError("marie's Bash results were never sent back to the model")
    out, lines = results["Bash"], results["Bash"].splitlines()
    rows = [
        Attempt(f"Bash reads {line.split()[1]}", line.startswith("DENIED"), line)
        for line in lines
        if line.startswith(("READ /run", "DENIED /run"))
    ]
    rows.append(Attempt("Bash reads a key from its environment", "ENV CLEAN" in lines, out))
    proc_read = "PROC DONE" in lines and not any(x.startswith("READ /proc") for x in lines)
    rows.append(Attempt("Bash reads the worker's /proc/<pid>/environ", proc_read, out))
    for host in ("anga", "orchestrator"):
        rows.append(Attempt(f"Bash reaches {host}", f"UNRESOLVED {host}" in lines, out))
    read = results.get("Read", "")
    rows.append(
        Attempt("Read tool opens /run/secrets/marie_key", "outside the sandbox" in read, read)
    )
    return rows


def internal_networks(cluster: ChaosCluster, service: str) -> Attempt:
    """Every network of ``service``'s container is internal (docker gives it no way out;
    the probe sends no traffic to the outside to find out)."""
    container = cluster.compose("ps", "-q", service).stdout.split()[0]
    names = json.loads(
        cluster.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", container)
    )
    internal = [
        cluster.docker("network", "inspect", "--format", "{{.Internal}}", n).strip() == "true"
        for n in names
    ]
    return Attempt(f"{service}'s container is on a network with a way out", all(internal), "")


def forged_result(cluster: ChaosCluster, run_id: str) -> Attempt:
    """The forged result was rejected and anga's own result became the task's."""
    cluster.summary(run_id)
    events = cluster.events(run_id)
    rejected = any(e.kind == "result_rejected" and e.task_id == "anga-slow" for e in events)
    result = json.loads(
        (cluster.folder / "results" / run_id / "anga" / "anga-slow" / "result.json").read_text()
    )
    real = result["status"] == "succeeded" and "FORGED" not in result.get("summary", "")
    return Attempt("push a forged result for anga's task", rejected and real, result["summary"])


def probe(cluster: ChaosCluster) -> list[Attempt]:
    """Run the probe on a cluster that is up with script() (see the module docstring)."""
    run_id = cluster.submit("probe")
    cluster.wait_for(run_id, lambda e: e.kind == "task_started" and e.task_id == "anga-slow")
    anga_job = f"anga__{run_id}__anga-slow__1"
    rows = [
        Attempt(r["attempt"], r["refused"], r.get("detail", ""))
        for r in redis_attempts(cluster, run_id, anga_job)
        if "refused" in r
    ]
    rows += redis_acl_attempts(cluster, run_id)
    rows.append(forged_result(cluster, run_id))
    rows.append(internal_networks(cluster, "marie"))
    return rows + bash_attempts(cluster)


def give_marie_bash(persona_file: Path) -> None:
    """Add Bash to marie's tools (in the copy): the probe tries the worst case, a persona
    whose model can run any shell command in her container."""
    text = persona_file.read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("tools:"))
    persona_file.write_text(text.replace(line, line + ", Bash", 1), encoding="utf-8")


def run_probe(folder: Path) -> list[Attempt]:
    """Copy the project to ``folder``, bring a scripted cluster up, probe, bring it down."""
    cluster = ChaosCluster(copy_project(folder), PROJECT)
    give_marie_bash(cluster.folder / "prompts" / "marie.md")
    try:
        cluster.up(PLANS, script())
        return probe(cluster)
    finally:
        cluster.make("clean")


def table(rows: list[Attempt]) -> str:
    """The attempts as a Markdown table, with the count of refusals."""
    lines = ["| from marie's container | refused |", "| --- | --- |"]
    lines += [f"| {r.attempt} | {'yes' if r.refused else 'NO'} |" for r in rows]
    refused = sum(r.refused for r in rows)
    return "\n".join([*lines, "", f"refused {refused} of {len(rows)}"])


def main() -> None:
    """Run the probe and print its table (`make probe`); exit 1 when anything got through."""
    if not compose_answers():
        sys.exit("probe: needs a Docker engine with Compose v2")
    with tempfile.TemporaryDirectory(prefix="crewbox-probe-") as tmp:
        rows = run_probe(Path(tmp))
    print(table(rows))
    if not all(r.refused for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
