"""The run view without a browser: the timeline's layout from event times, and the pages
(Starlette's TestClient) for bad and hostile input and an unreachable run log."""

from __future__ import annotations

import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from crewbox.config import Settings
from crewbox.models import (
    AttemptInfo,
    Event,
    EventKind,
    LLMCall,
    Payload,
    Plan,
    PlanReady,
    Request,
    TaskEnded,
    TaskSpec,
    Usage,
)
from crewbox.runlog import make_run_log
from crewbox.runlog.base import RunLog
from crewbox.runlog.files import FileRunLog
from crewbox.web.app import create_app
from crewbox.web.timeline import LABEL_W, ROW_H, WIDTH, layout
from tests.conftest import crewbox_env, run_crewbox

T0 = 1_000_000.0
RUN = "20261205-120000-abcdef"


def event(kind: EventKind, at_s: float, payload: Payload | None = None, **kw: Any) -> Event:
    e = Event.of(kind, RUN, payload, **kw)
    e.ts_s = T0 + at_s
    return e


def attempt(
    task_id: str, persona: str, start_s: float, end_s: float | None, n: int = 1
) -> list[Event]:
    """Dispatched 0.5 s before ``start_s``, started then, succeeded at ``end_s`` (None: runs)."""
    who = {"task_id": task_id, "persona": persona}
    events = [
        event("task_dispatched", start_s - 0.5, AttemptInfo(attempt=n), **who),
        event("task_started", start_s, AttemptInfo(attempt=n, worker="w"), **who),
    ]
    if end_s is not None:
        events.append(event("task_succeeded", end_s, TaskEnded(attempt=n), **who))
    return events


def plan(*tasks: tuple[str, str, list[str]]) -> Event:
    specs = [
        TaskSpec(id=t, persona=p, title=t, instructions="x", depends_on=d) for t, p, d in tasks
    ]
    return event("plan_ready", 0.0, PlanReady(plan=Plan(tasks=specs)))


def x_at(offset_s: float, span_s: float) -> float:
    return round(LABEL_W + offset_s * (WIDTH - LABEL_W - 10.0) / span_s, 1)


def test_one_lane_per_persona_and_bars_placed_by_their_times() -> None:
    events = [
        event("run_started", 0.0),
        plan(("a", "marie", []), ("b", "anga", []), ("c", "anga", ["a"])),
        *attempt("a", "marie", 1.0, 5.0),
        *attempt("b", "anga", 2.0, 4.0),
        *attempt("c", "anga", 6.0, None),
    ]
    timeline = layout(sorted(events, key=lambda e: e.ts_s), now_s=T0 + 10.0)
    assert [lane.persona for lane in timeline.lanes] == ["marie", "anga"]
    bars = {b.task_id: b for b in timeline.bars}
    assert bars["a"].x == x_at(1.0, 10.0) and bars["a"].x + bars["a"].width == pytest.approx(
        x_at(5.0, 10.0), abs=0.2
    )
    assert bars["a"].queued_x == x_at(0.5, 10.0)
    assert bars["c"].status == "running"
    assert bars["c"].x + bars["c"].width == pytest.approx(x_at(10.0, 10.0), abs=0.2)  # to now
    assert bars["b"].y == bars["c"].y  # one after the other: one row of anga's lane
    assert bars["a"].y < bars["b"].y
    (link,) = timeline.links
    assert (link.from_task, link.to_task) == ("a", "c")
    assert link.x1 == pytest.approx(bars["a"].x + bars["a"].width)
    assert link.x2 == bars["c"].queued_x


def test_attempts_of_one_persona_that_overlap_take_two_rows() -> None:
    events = [event("run_started", 0.0), *attempt("a", "marie", 1.0, 4.0)]
    events += attempt("b", "marie", 2.0, 3.0)
    timeline = layout(sorted(events, key=lambda e: e.ts_s), now_s=T0 + 5.0)
    (lane,) = timeline.lanes
    a, b = timeline.bars
    assert b.y - a.y == ROW_H
    assert lane.height > 2 * ROW_H


def test_a_retried_attempt_and_a_lost_one_end_with_their_own_status() -> None:
    who = {"task_id": "a", "persona": "marie"}
    events = [
        event("run_started", 0.0),
        *attempt("a", "marie", 1.0, None),
        event("attempt_lost", 2.0, AttemptInfo(attempt=1), **who),
        *attempt("a", "marie", 3.0, None, n=2),
        event("task_retried", 4.0, AttemptInfo(attempt=2), **who, message="boom"),
        *attempt("a", "marie", 5.0, 6.0, n=3),
    ]
    timeline = layout(events, now_s=T0 + 9.0)
    assert [(b.attempt, b.status) for b in timeline.bars] == [
        (1, "lost"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert timeline.bars[1].error == "boom"
    assert timeline.end_s == T0 + 6.0  # every bar ended: now does not stretch the axis


def test_no_events_give_an_empty_timeline() -> None:
    timeline = layout([], now_s=T0)
    assert timeline.lanes == [] and timeline.bars == [] and timeline.end_s > timeline.start_s


# -- pages -------------------------------------------------------------------------------
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def results(tmp_path: Path) -> FileRunLog:
    return FileRunLog(tmp_path / "results")


def client(log: Any) -> TestClient:
    return TestClient(create_app(lambda: log, clock=lambda: T0 + 10.0))


def write_run(log: RunLog, text: str = "Plan a recital", task_id: str = "a") -> str:
    request = Request(run_id=RUN, text=text, created_at_s=T0)
    log.create(request)
    call = LLMCall(stage="tasks", usage=Usage(input_tokens=1000, cost_usd=Decimal("0.5"), calls=1))
    for e in [
        event("run_started", 0.0),
        *attempt(task_id, "marie", 1.0, None),
        event("llm_call", 2.0, call, task_id=task_id, persona="marie"),
        event(
            "task_failed", 3.0, TaskEnded(attempt=1), task_id=task_id, persona="marie", message=text
        ),
        event(
            "task_dead_lettered",
            3.0,
            AttemptInfo(attempt=1),
            task_id=task_id,
            persona="marie",
            message=text,
        ),
    ]:
        log.append(e)
    return request.run_id


def test_a_run_page_shows_its_bars_usage_and_dead_letters(results: FileRunLog) -> None:
    run_id = write_run(results)
    page = client(results).get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert 'data-task="a"' in page.text and 'data-status="failed"' in page.text
    assert 'tr data-persona="marie"' in page.text and "$0.5000" in page.text
    assert 'id="dlq"' in page.text and "No task in the dead-letter queue" not in page.text
    assert 'hx-trigger="every 1s"' in page.text  # no summary yet: the page keeps polling
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_html_in_run_data_is_escaped(results: FileRunLog) -> None:
    run_id = write_run(results, text=HOSTILE, task_id="x")
    events = results.events(run_id)
    for e in events:  # a task id a hostile writer put straight into events.jsonl
        e.task_id = HOSTILE if e.task_id else None
    (results.store(run_id).folder / "events.jsonl").write_text(
        "".join(e.model_dump_json() + "\n" for e in events)
    )
    web = client(results)
    for url in ("/", f"/runs/{run_id}", f"/runs/{run_id}/live"):
        body = web.get(url).text
        assert HOSTILE not in body, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, url


def test_an_unknown_run_is_404_and_a_bad_run_id_400(results: FileRunLog) -> None:
    web = client(results)
    missing = web.get("/runs/20990101-000000-000000")
    assert missing.status_code == 404 and "no run" in missing.text
    for bad in ("a.b", ".x", "x" * 65, "%3Cscript%3E"):
        page = web.get(f"/runs/{bad}")
        assert page.status_code == 400, bad
        assert "is not a run id" in page.text and "<script>" not in page.text
    assert web.get("/no/such/page").status_code == 404


def test_the_view_is_read_only(results: FileRunLog) -> None:
    run_id = write_run(results)
    before = sorted(p.name for p in results.store(run_id).folder.iterdir())
    web = client(results)
    for method in ("post", "put", "delete"):
        assert getattr(web, method)(f"/runs/{run_id}").status_code == 405
    web.get(f"/runs/{run_id}")
    assert sorted(p.name for p in results.store(run_id).folder.iterdir()) == before


def test_an_unreachable_redis_is_a_503_page_and_the_server_goes_on() -> None:
    cfg = Settings(queue="rq", redis_url="redis://127.0.0.1:1/0", redis_password="x")
    web = TestClient(create_app(lambda: make_run_log(cfg)))
    for url in ("/", f"/runs/{RUN}"):
        page = web.get(url)
        assert page.status_code == 503, url
        assert "cannot reach Redis" in page.text
    assert web.get("/static/htmx.min.js").status_code == 200


def test_crewbox_web_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_crewbox(["web", "--port", str(port)], crewbox_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crewbox: error: cannot listen on"), lines
    assert "--port" in lines[0]
