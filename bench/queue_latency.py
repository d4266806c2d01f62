"""Round trip of a no-op task through each TaskQueue backend: enqueue → worker → result.

Prints p50/p99 latency (ms) and throughput (tasks/s) for `files` and `rq` side by side, and
their ratio. Redis: REDIS_URL, else a testcontainers Redis (CREWBOX_REDIS_IMAGE); the rq row is
left out when neither is there. Marks measured on 2-core machines: raw RQ
SimpleWorker ~340-370 jobs/s, enqueue-to-start p50 ~2.8 ms; watchfiles (debounce 10, step 2)
~4 ms to see a renamed-in file.

    .venv/bin/python bench/queue_latency.py [N]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crewbox.models import Result, Task, TaskSpec
from crewbox.queue.base import Emit, TaskQueue
from crewbox.queue.files import FileQueue


def noop(task: Task, emit: Emit) -> Result:
    return Result(
        run_id=task.run_id, task_id=task.task_id, persona=task.persona, status="succeeded"
    )


def round_trips(queue: TaskQueue, n: int) -> tuple[list[float], float]:
    """Latencies (ms) of n sequential round trips, and throughput of n pipelined ones (/s)."""
    stop = threading.Event()
    threading.Thread(
        target=queue.serve,
        args=("bench", noop),
        daemon=True,
        kwargs={"worker_id": "bench-1", "stop": stop},
    ).start()
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        queue.enqueue(task("seq", i))
        while not queue.receive("seq", timeout_s=5):
            pass
        latencies.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for i in range(n):
        queue.enqueue(task("burst", i))
    got = 0
    while got < n:
        got += len(queue.receive("burst", timeout_s=5))
    throughput = n / (time.perf_counter() - start)
    stop.set()
    return latencies, throughput


def task(run_id: str, i: int) -> Task:
    spec = TaskSpec(id=f"t{i}", persona="bench", title="noop", instructions="noop")
    return Task(run_id=run_id, spec=spec, request_text="bench")


@contextlib.contextmanager
def redis_url() -> Iterator[str | None]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    try:
        from testcontainers.community.redis import RedisContainer

        with RedisContainer(os.environ.get("CREWBOX_REDIS_IMAGE", "redis:7-alpine")) as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
    except Exception as exc:  # no Docker: report and go on with the files backend only
        print(f"(no Redis for the rq row: {exc})")
        yield None


def row(name: str, latencies: list[float], throughput: float) -> str:
    p50 = statistics.median(latencies)
    p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1]
    return f"{name:<6} {p50:>9.2f} {p99:>9.2f} {throughput:>11.0f}"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["files"] = round_trips(FileQueue(Path(tmp)), n)
    with redis_url() as url:
        if url:
            import redis

            from crewbox.queue.rq import RQQueue

            client = redis.Redis.from_url(url)
            client.flushdb()
            rows["rq"] = round_trips(RQQueue(client), n)
    print(f"{n} no-op tasks per backend, one in-process worker")
    print(f"{'queue':<6} {'p50 ms':>9} {'p99 ms':>9} {'tasks/s':>11}")
    for name, (lat, tput) in rows.items():
        print(row(name, lat, tput))
    if len(rows) == 2:
        f, r = rows["files"], rows["rq"]
        print(
            f"files/rq: p50 {statistics.median(f[0]) / statistics.median(r[0]):.2f}x, "
            f"throughput {f[1] / r[1]:.2f}x"
        )


if __name__ == "__main__":
    main()
