"""The run view (`crewbox web`) in headless Chromium, during an embedded run and after it.

A real `crewbox run --plan` (one worker process per persona, ScriptedLLM behind the real
code path) runs three personas whose first calls meet at a barrier and then take
TASK_CALL_S each, so their bars overlap in time, and a fourth task that depends on one of
them. `crewbox web` runs as a subprocess on a free port over the same results/. Chromium
(Debian's, driven by Playwright) opens the run's page while it runs: three bars are shown
running at once, and the page, never reloaded, follows the run (htmx polling) to
``succeeded``; then every bar has succeeded and the tokens and cost per persona equal
summary.json's. A run whose events carry HTML is shown as text, nothing of it runs.

The screenshot of the timeline (with the usage table under it) is saved in the test's tmp
folder, and to docs/img/run-view.png (the one README shows) with CREWBOX_UPDATE_SCREENSHOTS=1.

Measured: about 25 s on a 2-core machine shared with other test runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crewbox.models import Event, Request, RunSummary, Usage
from crewbox.progress import money
from crewbox.runlog.files import FileRunLog
from tests.conftest import ROOT, spec
from tests.integration.test_durability import EmbeddedRun

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

TASK_CALL_S = 4.0
"""How long each of the three parallel tasks' first call takes (ScriptedLLM delay_s)."""

WAIT_MS = 90_000
"""Longest wait for the page to show a state, in ms."""

RUNNING_FILL, SUCCEEDED_FILL = "rgb(47, 111, 222)", "rgb(46, 158, 91)"
"""The bars' colours in crewbox/web/static/style.css (#2f6fde, #2e9e5b)."""

HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def parallel_plan() -> list[dict[str, Any]]:
    return [
        spec("choreo", "marie", title="Kids class choreography"),
        spec("tickets", "anga", title="Ticket page"),
        spec("teaser", "fabien", title="Teaser posts"),
        spec("campaign", "fabien", ["choreo"], title="Instagram campaign"),
    ]


def parallel_script() -> list[dict[str, Any]]:
    usage = {"input_tokens": 400, "output_tokens": 60, "cache_read_tokens": 100}
    steps: list[dict[str, Any]] = []
    for i, task_id in enumerate(("choreo", "tickets", "teaser")):
        steps.append(
            {
                "match": f"Task id: {task_id}",
                "barrier": "start",
                "parties": 3,
                "delay_s": TASK_CALL_S + i,
                "usage": {**usage, "output_tokens": 60 + 10 * i},
                "text": f"{task_id} done.",
            }
        )
    campaign = {"match": "Task id: campaign", "delay_s": 1.5, "usage": usage}
    steps.append({**campaign, "text": "campaign done."})
    steps.append({"match": "## Results", "usage": usage, "text": "# Recital\n\nAll done."})
    return steps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[EmbeddedRun, str]]:
    """The embedded run (not started) and the URL of `crewbox web` over its results/."""
    run = EmbeddedRun(tmp_path, parallel_plan(), parallel_script())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "crewbox", "web", "--port", str(port)],
        env=run.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        yield run, url
    finally:
        server.terminate()
        server.communicate(timeout=30)
        if run.proc and run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate(timeout=30)


def wait_until_up(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1]
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("crewbox web did not answer within 30 s")


@pytest.fixture
def page() -> Iterator[Any]:
    """A page of headless Chromium (Debian's; Playwright's own download is not used)."""
    if CHROMIUM is None:
        if os.environ.get("CREWBOX_REQUIRE_CHROMIUM"):  # .ci/run sets it
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("needs Chromium (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1100, "height": 900})
        finally:
            browser.close()


def test_the_run_view_follows_a_run_live_and_then_shows_its_summary(
    web: tuple[EmbeddedRun, str], page: Any
) -> None:
    from playwright.sync_api import expect

    run, url = web
    run.start("run", "--plan", str(run.tmp / "plan.yaml"), "Plan a spring recital")
    run.wait_for(lambda e: e.kind == "plan_ready")
    run_id = run.run_dir().name
    page.goto(f"{url}/runs/{run_id}")
    running = page.locator('#timeline .bar[data-status="running"]')
    expect(running).to_have_count(3, timeout=WAIT_MS)  # three personas at once, live
    assert running.first.locator("rect.run").evaluate("e => getComputedStyle(e).fill") == (
        RUNNING_FILL
    )
    assert {running.nth(i).get_attribute("data-persona") for i in range(3)} == {
        "marie",
        "anga",
        "fabien",
    }
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=WAIT_MS)
    code, _, err = run.finish()
    assert code == 0, err
    assert page.locator("#live").get_attribute("hx-trigger") is None  # polling stopped

    summary = run.summary()
    bars = page.locator("#timeline .bar")
    expect(bars).to_have_count(4)
    assert {bars.nth(i).get_attribute("data-status") for i in range(4)} == {"succeeded"}
    fill = "e => getComputedStyle(e).fill"
    assert {bars.nth(i).locator("rect.run").evaluate(fill) for i in range(4)} == {SUCCEEDED_FILL}
    assert_overlap(page, ("choreo", "tickets", "teaser"))
    expect(page.locator('#timeline .link[data-from="choreo"][data-to="campaign"]')).to_have_count(1)
    assert_usage_table(page, summary)
    save_screenshot(page, run.tmp)

    page.goto(url)
    expect(page.locator(f'#runs tr[data-run="{run_id}"] .status')).to_have_text("succeeded")


def assert_overlap(page: Any, task_ids: tuple[str, ...]) -> None:
    """The drawn bars of ``task_ids`` share some stretch of the time axis."""
    spans = []
    for task_id in task_ids:
        rect = page.locator(f'#timeline .bar[data-task="{task_id}"] rect.run')
        x, width = float(rect.get_attribute("x")), float(rect.get_attribute("width"))
        spans.append((x, x + width))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans


def assert_usage_table(page: Any, summary: RunSummary) -> None:
    """Each persona's row (and the whole run's) shows summary.json's tokens and cost."""
    stages = summary.usage_by_stage
    orchestrator = Usage.total(stages[s] for s in ("planner", "synthesizer") if s in stages)
    rows = {**summary.usage_by_persona, "(orchestrator)": orchestrator}
    assert len(rows) == 4 and orchestrator.calls >= 1  # three personas and the orchestrator
    assert Usage.total(rows.values()) == summary.usage_total  # the rows add up to the run
    rows["(run)"] = summary.usage_total
    for persona, usage in rows.items():
        cells = page.locator(f'#usage tr[data-persona="{persona}"] td').all_inner_texts()
        assert cells[1:] == [
            str(usage.calls),
            f"{usage.input_tokens:,}",
            f"{usage.output_tokens:,}",
            f"{usage.cache_write_tokens:,}",
            f"{usage.cache_read_tokens:,}",
            money(usage.cost_usd),
        ], persona


def save_screenshot(page: Any, tmp: Path) -> None:
    shot = tmp / "run-view.png"
    page.locator("#live").screenshot(path=str(shot))
    assert shot.stat().st_size > 1000
    if os.environ.get("CREWBOX_UPDATE_SCREENSHOTS"):
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "img" / "run-view.png")


def test_html_in_a_runs_events_is_shown_as_text_and_never_runs(
    web: tuple[EmbeddedRun, str], page: Any
) -> None:
    run, url = web
    log = FileRunLog(run.tmp / "results")
    request = Request(text=HOSTILE)
    log.create(request)
    for kind in ("run_started", "task_dispatched", "task_dead_lettered"):
        data = {"attempt": 1} if kind != "run_started" else {}
        log.append(
            Event(
                kind=kind,
                run_id=request.run_id,
                task_id=HOSTILE,
                persona=HOSTILE,
                message=HOSTILE,
                data=data,
            )
        )
    page.goto(f"{url}/runs/{request.run_id}")
    assert page.get_by_text(HOSTILE).count() >= 3  # request, dead letter's task and error
    page.goto(url)
    assert page.get_by_text(HOSTILE).count() == 1
    assert page.evaluate("window.pwned") is None
