"""The benchmark's own arithmetic (bench/stats.py) and its marks (bench/report.py)."""

from __future__ import annotations

import pytest

from bench.report import Mark, markdown
from bench.stats import efficiency, ideal_makespan_s, overhead_ms_per_task, percentile, ratio


def test_ideal_makespan_rounds_the_waves_up() -> None:
    assert ideal_makespan_s(100, 10, 0.2) == pytest.approx(2.0)
    assert ideal_makespan_s(10, 3, 2.5) == pytest.approx(10.0)  # 4 waves, the last of one
    assert ideal_makespan_s(1, 10, 0.2) == pytest.approx(0.2)


def test_efficiency_is_the_ideal_over_the_measured_makespan() -> None:
    assert efficiency(100, 10, 0.2, 2.5) == pytest.approx(0.8)
    assert efficiency(10, 3, 2.5, 10.0) == pytest.approx(1.0)


def test_overhead_spreads_what_is_not_llm_time_over_the_tasks() -> None:
    assert overhead_ms_per_task(100, 10, 0.2, 2.5) == pytest.approx(5.0)


@pytest.mark.parametrize(
    "args", [(0, 10, 0.2, 1.0), (10, 0, 0.2, 1.0), (10, 1, -1.0, 1.0), (10, 1, 0.2, 0.0)]
)
def test_impossible_inputs_are_refused(args: tuple[int, int, float, float]) -> None:
    with pytest.raises(ValueError):
        efficiency(*args)


def test_percentiles_interpolate_between_ranks() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_no_samples_and_bad_ranks() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"1\.\.99"):
        percentile([1.0, 2.0], 100)


def test_ratio_is_none_when_a_side_is_missing() -> None:
    assert ratio(3.0, 4.0) == 0.75
    assert ratio(None, 4.0) is None
    assert ratio(3.0, 0.0) is None


def test_marks_say_met_missed_or_unmeasured() -> None:
    at_least = Mark("efficiency_rq", ">=", 0.98)
    at_most = Mark("run_startup_s", "<=", 1.5)
    assert at_least.met({"efficiency_rq": 0.99}) is True
    assert at_least.met({"efficiency_rq": 0.97}) is False
    assert at_most.met({"run_startup_s": 1.6}) is False
    assert at_most.met({"run_startup_s": None}) is None
    table = markdown(
        {"efficiency_rq": 0.5, "run_startup_s": None},
        [("efficiency_rq", "e"), ("run_startup_s", "s")],
    )
    assert "| `efficiency_rq` | 0.500 | >= 0.98 | **no** | e |" in table
    assert "| `run_startup_s` | n/a | <= 1.5 |  | s |" in table
