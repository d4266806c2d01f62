"""The benchmark's arithmetic: percentiles, the ideal makespan, efficiency, overhead.

Pure functions of measured numbers (no I/O), so they are unit tested
(tests/unit/test_bench_stats.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (1..99) of ``samples``, interpolated between the closest ranks
    (``statistics.quantiles``, method ``inclusive``: the 50th is the median, the 99th of
    two samples lies between them).

    Raises:
        ValueError: no samples, or ``q`` outside 1..99.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 1 <= q <= 99:
        raise ValueError(f"percentile q must be 1..99, got {q}")
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def ideal_makespan_s(tasks: int, workers: int, llm_s: float) -> float:
    """``ceil(tasks / workers) * llm_s``: the makespan of ``tasks`` independent tasks on
    ``workers`` workers when each task is one LLM call of ``llm_s`` seconds and nothing
    else takes time (the issue's definition).

    Raises:
        ValueError: ``tasks`` or ``workers`` below 1, or a negative ``llm_s``.
    """
    if tasks < 1 or workers < 1 or llm_s < 0:
        raise ValueError(
            f"need tasks >= 1, workers >= 1, llm_s >= 0 (got {tasks}, {workers}, {llm_s})"
        )
    return math.ceil(tasks / workers) * llm_s


def efficiency(tasks: int, workers: int, llm_s: float, makespan_s: float) -> float:
    """The ideal makespan (:func:`ideal_makespan_s`) over the measured one: 1.0 means
    crewbox added nothing.

    Raises:
        ValueError: ``makespan_s`` is not positive (or see :func:`ideal_makespan_s`).
    """
    if makespan_s <= 0:
        raise ValueError(f"makespan must be positive, got {makespan_s}")
    return ideal_makespan_s(tasks, workers, llm_s) / makespan_s


def overhead_ms_per_task(tasks: int, workers: int, llm_s: float, makespan_s: float) -> float:
    """``(makespan - LLM time) / tasks`` in milliseconds, where the LLM time is what the
    LLM calls take on the critical path (the ideal makespan): crewbox's own time, spread
    over the tasks."""
    return (makespan_s - ideal_makespan_s(tasks, workers, llm_s)) / tasks * 1000


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
