"""``make bench`` / ``python -m bench``: every figure of crewbox's benchmark in one run,
printed as a Markdown table and written to ``bench/results.json``.

Figures never fail the run (a benchmark is not a test): a figure that cannot be taken here
(no Redis, no Docker engine, a step that failed) is null, and ``<group>_reason`` says why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cluster, engines, many_personas, raw_rq, startup, tracing
from bench.machine import load_average, machine, rss_mb
from bench.pipeline import Phase, Pipeline
from bench.redis_server import redis_url
from bench.report import header, markdown, write_json
from bench.stats import efficiency, overhead_ms_per_task, percentile, ratio

RESULTS = Path(__file__).resolve().parent / "results.json"

ROWS = [
    ("efficiency_files", "ideal ceil(N/W)·L / measured makespan, embedded (files)"),
    ("efficiency_rq", "the same on Redis + RQ (the cluster's backend)"),
    ("efficiency_raw_rq", "the same with bare RQ jobs (sleep L) on W SimpleWorkers"),
    ("efficiency_files_slow", "the same at the slow parameters"),
    ("efficiency_rq_slow", "the same at the slow parameters"),
    ("overhead_ms_per_task_files", "(makespan − LLM time) / N"),
    ("overhead_ms_per_task_rq", "(makespan − LLM time) / N"),
    ("tracing_off_us_per_task", "a task's spans, tracing off (the no-op API) − none, µs"),
    ("tracing_off_pct_of_overhead", "that, in % of overhead_ms_per_task_files"),
    ("tracing_on_us_per_task", "the same spans recorded (SDK, batched, dropped), µs"),
    ("dispatch_p50_ms_files", "enqueue → the worker starts the task"),
    ("dispatch_p99_ms_files", ""),
    ("dispatch_p50_ms_rq", ""),
    ("dispatch_p99_ms_rq", ""),
    ("dispatch_p50_ms_raw_rq", "a bare RQ job, SimpleWorker, same Redis"),
    ("dispatch_p99_ms_raw_rq", ""),
    ("dispatch_ratio_rq", "dispatch p50: rq / raw RQ"),
    ("throughput_tasks_s_files", "tasks/s, whole pipeline, LLM answers at once, 1 worker"),
    ("throughput_tasks_s_rq", ""),
    ("throughput_jobs_s_raw_rq", "no-op jobs/s, 1 SimpleWorker"),
    ("throughput_ratio_files", "files / raw RQ"),
    ("throughput_ratio_rq", "rq / raw RQ"),
    ("run_startup_s", "`crewbox run --plan`: process start → first LLM call (median of 3)"),
    ("worker_rss_mb", "a worker's resident memory after the throughput run (max of both)"),
    ("engine_builtin_first_call_ms", "one task, engine builtin: handed to the runner → 1st call"),
    ("engine_claude_code_first_call_ms", "the same with engine claude-code (CLI start-up)"),
    ("engine_builtin_task_ms", "that task whole (a Write, two calls), builtin"),
    ("engine_claude_code_task_ms", "the same, claude-code"),
    ("engine_builtin_worker_rss_mb", "the worker process after builtin tasks"),
    ("engine_claude_code_cli_rss_mb", "the Claude Code CLI's peak RSS, on top of the worker"),
    ("many_workers_started", "`crewbox run`, 200 personas present, a plan naming 10: workers"),
    ("many_workers_at_once", "the most worker processes alive at once (CREWBOX_MAX_WORKERS)"),
    ("many_workers_rss_mb_total", "their resident memory, summed (each at its largest)"),
    ("many_first_dispatch_s", "CLI start → first task dispatched (planning included)"),
    ("many_first_started_s", "CLI start → first task started by a worker"),
    ("many_superseded", "attempts superseded (lost and run again) in that run"),
    ("cluster_up_s", "`make up` → every service healthy, images built"),
    ("submit_s", "a one-task plan submitted → its answer (local model)"),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see ``python -m bench --help``)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--tasks", type=int, default=100, help="N (default 100)")
    p.add_argument("--workers", type=int, default=10, help="W (default 10)")
    p.add_argument("--llm-ms", type=float, default=200, help="L in ms (default 200)")
    p.add_argument("--slow-tasks", type=int, default=10, help="N of the slow run (10)")
    p.add_argument("--slow-workers", type=int, default=3, help="W of the slow run (3)")
    p.add_argument("--slow-llm-ms", type=float, default=2500, help="L of the slow run (2500)")
    p.add_argument("--throughput-tasks", type=int, default=300, help="tasks (300)")
    p.add_argument("--dispatch-samples", type=int, default=200, help="tasks (200)")
    p.add_argument("--no-cluster", action="store_true", help="skip the Docker figures")
    p.add_argument("--output", type=Path, default=RESULTS, help="the JSON file")
    args = p.parse_args(argv)
    for name in ("tasks", "workers", "slow_tasks", "slow_workers", "throughput_tasks"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.llm_ms < 0 or args.slow_llm_ms < 0:
        p.error("--llm-ms and --slow-llm-ms must not be negative")
    if args.dispatch_samples < 2:
        p.error("--dispatch-samples must be at least 2")
    return args


def progress(text: str) -> None:
    """A progress line on stderr (stdout holds the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def guarded(figures: dict[str, Any], group: str, measure: Callable[[], dict[str, Any]]) -> None:
    """``figures.update(measure())``; a failure leaves the group's figures null and puts
    the reason in ``<group>_reason``."""
    try:
        figures.update(measure())
    except Exception as exc:  # a figure that cannot be taken is reported, not fatal
        figures[f"{group}_reason"] = f"{type(exc).__name__}: {exc}"
        progress(f"{group}: not measured: {exc}")


def efficiency_figures(backend: str, args: argparse.Namespace, url: str | None) -> dict[str, Any]:
    """``efficiency_<b>``, ``overhead_ms_per_task_<b>``, ``efficiency_<b>_slow``."""
    n, w, llm_s = args.tasks, args.workers, args.llm_ms / 1000
    with Pipeline(backend, w, [Phase("main", n, llm_s)], url) as pipe:
        makespan = pipe.run("main", n).makespan_s
    progress(f"{backend}: N={n} W={w} L={args.llm_ms:g}ms makespan {makespan:.3f}s")
    sn, sw, sl = args.slow_tasks, args.slow_workers, args.slow_llm_ms / 1000
    with Pipeline(backend, sw, [Phase("slow", sn, sl)], url) as pipe:
        slow = pipe.run("slow", sn).makespan_s
    progress(f"{backend}: N={sn} W={sw} L={args.slow_llm_ms:g}ms makespan {slow:.3f}s")
    return {
        f"efficiency_{backend}": efficiency(n, w, llm_s, makespan),
        f"overhead_ms_per_task_{backend}": overhead_ms_per_task(n, w, llm_s, makespan),
        f"efficiency_{backend}_slow": efficiency(sn, sw, sl, slow),
        f"makespan_s_{backend}": makespan,
        f"makespan_s_{backend}_slow": slow,
    }


def single_worker_figures(
    backend: str, args: argparse.Namespace, url: str | None
) -> dict[str, Any]:
    """Dispatch latency, pipeline throughput, and the worker's RSS afterwards (1 worker)."""
    phases = [Phase("dispatch", args.dispatch_samples, 0), Phase("tput", args.throughput_tasks, 0)]
    with Pipeline(backend, 1, phases, url) as pipe:
        latencies = pipe.dispatch_ms(args.dispatch_samples)
        timing = pipe.run("tput", args.throughput_tasks)
        rss = rss_mb(pipe.pids()[0])
    tput = args.throughput_tasks / timing.makespan_s
    progress(f"{backend}: dispatch p50 {statistics.median(latencies):.2f}ms, {tput:.0f} tasks/s")
    return {
        f"dispatch_p50_ms_{backend}": percentile(latencies, 50),
        f"dispatch_p99_ms_{backend}": percentile(latencies, 99),
        f"throughput_tasks_s_{backend}": tput,
        f"worker_rss_mb_{backend}": rss,
    }


def raw_rq_figures(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Raw RQ's dispatch latency, no-op throughput, and efficiency (N jobs sleeping L on W
    SimpleWorkers: the ceiling of any RQ-based pipeline on this machine)."""
    with raw_rq.raw_worker(url) as queue:
        latencies = raw_rq.dispatch_ms(queue, args.dispatch_samples)
        jobs_s = raw_rq.throughput_jobs_s(queue, args.throughput_tasks)
    progress(f"raw RQ: dispatch p50 {statistics.median(latencies):.2f}ms, {jobs_s:.0f} jobs/s")
    n, w, llm_s = args.tasks, args.workers, args.llm_ms / 1000
    with raw_rq.raw_worker(url, w) as queue:
        makespan = raw_rq.makespan_s(queue, n, llm_s)
    progress(f"raw RQ: N={n} W={w} L={args.llm_ms:g}ms makespan {makespan:.3f}s")
    return {
        "efficiency_raw_rq": efficiency(n, w, llm_s, makespan),
        "dispatch_p50_ms_raw_rq": percentile(latencies, 50),
        "dispatch_p99_ms_raw_rq": percentile(latencies, 99),
        "throughput_jobs_s_raw_rq": jobs_s,
    }


def derived(figures: dict[str, Any]) -> dict[str, Any]:
    """Ratios, and the worse worker RSS of the two backends."""
    rss = [v for k in ("worker_rss_mb_files", "worker_rss_mb_rq") if (v := figures.get(k))]
    raw = figures.get("throughput_jobs_s_raw_rq")
    return {
        "dispatch_ratio_rq": ratio(
            figures.get("dispatch_p50_ms_rq"), figures.get("dispatch_p50_ms_raw_rq")
        ),
        "throughput_ratio_rq": ratio(figures.get("throughput_tasks_s_rq"), raw),
        "throughput_ratio_files": ratio(figures.get("throughput_tasks_s_files"), raw),
        "worker_rss_mb": max(rss) if rss else None,
        "tracing_off_pct_of_overhead": tracing.share_of_overhead(
            figures.get("tracing_off_us_per_task"), figures.get("overhead_ms_per_task_files")
        ),
    }


def measure_backend(
    figures: dict[str, Any], backend: str, args: argparse.Namespace, url: str | None
) -> None:
    """The efficiency, dispatch and throughput figures of one backend into ``figures``."""
    progress(f"{backend}: efficiency runs")
    guarded(figures, f"efficiency_{backend}", lambda: efficiency_figures(backend, args, url))
    progress(f"{backend}: dispatch and throughput")
    guarded(figures, f"pipeline_{backend}", lambda: single_worker_figures(backend, args, url))


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure (the keys of ROWS, and what they were measured on)."""
    figures: dict[str, Any] = {key: None for key, _ in ROWS}
    figures["machine"] = machine()
    figures["load_avg_start"] = load_average()
    started = time.time()
    with redis_url() as (url, where):
        figures["params"] = {
            "tasks": args.tasks, "workers": args.workers, "llm_ms": args.llm_ms,
            "slow_tasks": args.slow_tasks, "slow_workers": args.slow_workers,
            "slow_llm_ms": args.slow_llm_ms, "throughput_tasks": args.throughput_tasks,
            "dispatch_samples": args.dispatch_samples, "redis": where,
        }  # fmt: skip
        backends = ["files"] + (["rq"] if url else [])
        if not url:
            figures["rq_reason"] = where
        for backend in backends:
            measure_backend(figures, backend, args, url)
        if url:
            progress("raw RQ")
            guarded(figures, "raw_rq", lambda: raw_rq_figures(args, url))
    progress("tracing: a task's spans, off and on")
    guarded(figures, "tracing", tracing.measure)
    progress("embedded, 200 personas, a plan naming 10")
    guarded(figures, "many_personas", many_personas.measure)
    progress("crewbox run start-up")
    guarded(figures, "startup", lambda: {"run_startup_s": startup.run_startup_s()})
    progress("engines: one task each, builtin and claude-code")
    guarded(figures, "engines", engines.engine_figures)
    if args.no_cluster:
        figures["cluster_reason"] = "skipped (--no-cluster)"
    else:
        progress("cluster: make up, submit, make down (minutes)")
        guarded(figures, "cluster", cluster.measure)
    figures.update(derived(figures))
    figures["bench_s"] = time.time() - started
    return figures


def main(argv: list[str] | None = None) -> None:
    """Measure, print the table (stdout), write the JSON."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    figures = collect(args)
    write_json(figures, args.output)
    print(header(figures))
    print()
    print(markdown(figures, ROWS))
    reasons = {k: v for k, v in figures.items() if k.endswith("_reason")}
    for key, reason in reasons.items():
        print(f"\n{key}: {reason}")
    progress(f"wrote {args.output}")


if __name__ == "__main__":
    main()
