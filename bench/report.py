"""The figures as a Markdown table (README's Performance section is this output) and as
``bench/results.json``; the issue's marks and whether each was met."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Mark:
    """A target for one figure: ``key`` ``op`` ``bound`` (e.g. efficiency_rq >= 0.98)."""

    key: str
    op: str
    bound: float

    def met(self, figures: dict[str, Any]) -> bool | None:
        """Whether the figure meets the mark; None when the figure is missing."""
        value = figures.get(self.key)
        if value is None:
            return None
        compare: Callable[[float, float], bool] = operator.ge if self.op == ">=" else operator.le
        return compare(value, self.bound)


MARKS = [
    Mark("efficiency_files", ">=", 0.98),
    Mark("efficiency_rq", ">=", 0.98),
    Mark("dispatch_p50_ms_files", "<=", 10),
    Mark("dispatch_ratio_rq", "<=", 1.2),
    Mark("throughput_ratio_rq", ">=", 0.8),
    Mark("run_startup_s", "<=", 1.5),
    Mark("worker_rss_mb", "<=", 80),
    Mark("cluster_up_s", "<=", 15),
]
"""The marks of the issue (docs: README, Performance)."""


def fmt(value: Any) -> str:
    """A figure as the table shows it: 3 significant decimals below 10, 1 above."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(figures: dict[str, Any], keys: list[tuple[str, str]]) -> str:
    """The table: one row per ``(key, what it is)`` in ``keys``, with its mark if any."""
    marks = {m.key: m for m in MARKS}
    lines = ["| figure | value | mark | met | what |", "| --- | ---: | --- | --- | --- |"]
    for key, what in keys:
        mark = marks.get(key)
        target = f"{mark.op} {mark.bound:g}" if mark else ""
        met = mark.met(figures) if mark else None
        shown = "" if mark is None or met is None else ("yes" if met else "**no**")
        lines.append(f"| `{key}` | {fmt(figures.get(key))} | {target} | {shown} | {what} |")
    return "\n".join(lines)


def header(figures: dict[str, Any]) -> str:
    """The lines above the table: the machine, its load at the start, the parameters."""
    m, p = figures["machine"], figures["params"]
    load = figures.get("load_avg_start")
    return "\n\n".join(
        [
            f"Machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}, {m['os']}; "
            f"load average at the start {load} (1, 5, 15 min).",
            f"Parameters: N={p['tasks']} tasks, W={p['workers']} workers, "
            f"L={p['llm_ms']:g} ms; also N={p['slow_tasks']}, W={p['slow_workers']}, "
            f"L={p['slow_llm_ms']:g} ms; throughput on {p['throughput_tasks']} tasks, "
            f"1 worker; dispatch over {p['dispatch_samples']} tasks; Redis: {p['redis']}.",
        ]
    )


def write_json(figures: dict[str, Any], path: Path) -> None:
    """``figures`` as indented JSON at ``path``."""
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
