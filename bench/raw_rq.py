"""Raw RQ on the same Redis, the yardstick: a bare ``rq.SimpleWorker`` in its own process
running no-op jobs (RQ's default serializer, no crewbox code on the path).

``python -m bench.raw_rq REDIS_URL`` is that worker; the functions below measure it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from rq import Queue, SimpleWorker, Worker, get_current_job

QUEUE = "bench-raw"
ROOT = Path(__file__).resolve().parent.parent


def noop() -> None:
    """A job that does nothing."""


def mark(key: str) -> None:
    """A job that RPUSHes the time it started (Unix s) to list ``key``."""
    started = time.time()
    job = get_current_job()
    assert job is not None
    job.connection.rpush(key, repr(started))


def sleep_then_count(seconds: float, key: str) -> None:
    """A job that stands in for an LLM call: sleeps ``seconds``, then RPUSHes the time it
    ended (Unix s) to list ``key``."""
    time.sleep(seconds)
    job = get_current_job()
    assert job is not None
    job.connection.rpush(key, repr(time.time()))


@contextmanager
def raw_worker(url: str, workers: int = 1) -> Iterator[Queue]:
    """``workers`` SimpleWorker processes on QUEUE (all registered before the block starts);
    the queue."""
    client = redis.Redis.from_url(url)
    queue = Queue(QUEUE, connection=client)
    queue.empty()  # type: ignore[no-untyped-call]
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench.raw_rq", url], cwd=ROOT)
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 30
        while Worker.count(connection=client, queue=queue) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{workers} raw RQ workers did not register within 30 s")
            time.sleep(0.05)
        yield queue
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """Wait ``grace_s`` for a terminated worker, then kill it: an idle SimpleWorker may sit
    in its blocking dequeue past a SIGTERM, and the figures are already taken."""
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def makespan_s(queue: Queue, jobs: int, job_s: float) -> float:
    """``jobs`` jobs of ``job_s`` seconds each enqueued at once: from the first enqueue until
    the last one ended (what crewbox's efficiency measures, with bare RQ jobs)."""
    client = queue.connection
    key = "bench-raw:ended"
    client.delete(key)
    start = time.time()
    for _ in range(jobs):
        queue.enqueue(sleep_then_count, job_s, key)
    deadline = time.monotonic() + 120 + jobs * job_s
    while client.llen(key) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError("raw RQ jobs did not finish in time")
        time.sleep(0.01)
    return max(float(t) for t in client.lrange(key, 0, -1)) - start


def dispatch_ms(queue: Queue, samples: int, gap_s: float = 0.02) -> list[float]:
    """Enqueue to job start, in ms, for ``samples`` jobs sent one at a time to the idle
    worker (``gap_s`` after the previous job started), as crewbox's are measured."""
    client = queue.connection
    key = "bench-raw:started"
    client.delete(key)
    latencies = []
    for _ in range(samples):
        time.sleep(gap_s)
        sent = time.time()
        queue.enqueue(mark, key)
        reply = client.blpop([key], timeout=10)
        if reply is None:
            raise RuntimeError("a raw RQ job did not start within 10 s")
        latencies.append((float(reply[1]) - sent) * 1000)
    return latencies


def throughput_jobs_s(queue: Queue, jobs: int) -> float:
    """No-op jobs per second: ``jobs`` enqueued, from the first enqueue until the worker
    has finished the last one."""
    start = time.perf_counter()
    last = None
    for _ in range(jobs):
        last = queue.enqueue(noop)
    assert last is not None
    deadline = time.monotonic() + 120
    while last.get_status(refresh=True) != "finished":
        if time.monotonic() > deadline:
            raise RuntimeError("raw RQ jobs did not finish within 120 s")
        time.sleep(0.01)  # a poll, not a busy loop: the worker needs the CPU
    return jobs / (time.perf_counter() - start)


def main() -> None:
    """Serve QUEUE with a SimpleWorker until SIGTERM."""
    client = redis.Redis.from_url(sys.argv[1])
    SimpleWorker([Queue(QUEUE, connection=client)], connection=client).work(logging_level="WARNING")


if __name__ == "__main__":
    main()
