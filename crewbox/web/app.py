"""The run view's web app (Starlette, Jinja2 templates, htmx): read-only pages over a run log.

Routes (GET only; anything else is 405)::

    /                        the runs, newest first: status, tokens, cost
    /runs/<run_id>           one run: timeline, usage per persona, dead-letter queue
    /runs/<run_id>/live      the changing part of that page; the page's htmx polls it
                             every POLL_S while the run has no summary, then stops
    /static/...              htmx (vendored from the npm package htmx.org) and the CSS

A run id that is not one (crewbox.models.RUN_ID_PATTERN) is a 400 page, an unknown run a
404 page, an unreachable run log (Redis down) a 503 page saying so; the server goes on.
Every value from the run log reaches the page through Jinja2's autoescaping, and the
Content-Security-Policy allows scripts from this server only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from crewbox.errors import QueueError, RunNotFoundError
from crewbox.progress import money
from crewbox.runlog.base import RunLog
from crewbox.web.view import run_rows, run_view, valid_run_id

HERE = Path(__file__).parent

POLL_S = 1
"""How often a live run's page asks for its changing part, in seconds."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with every page: no script but this server's files (htmx), no framing."""


def templates() -> Jinja2Templates:
    """The page templates, every ``{{ value }}`` HTML-escaped (autoescape on for all)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["money"] = money
    env.filters["thousands"] = lambda n: f"{n:,}"
    return Jinja2Templates(env=env)


def create_app(run_log: Callable[[], RunLog], clock: Callable[[], float] = time.time) -> Starlette:
    """The app over the run log ``run_log()`` gives (made once, at the first request);
    ``clock`` gives now in Unix s (where running bars end)."""
    pages = templates()
    made: list[RunLog] = []

    def log() -> RunLog:
        if not made:
            made.append(run_log())
        return made[0]

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        response = pages.TemplateResponse(request, name, context, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def runs(request: Request) -> Response:
        return render(request, "runs.html", {"rows": run_rows(log())})

    def run_page(request: Request) -> Response:
        view = run_view(log(), _run_id(request), clock())
        return render(request, "run.html", {"view": view, "poll_s": POLL_S})

    def live(request: Request) -> Response:
        view = run_view(log(), _run_id(request), clock())
        return render(request, "live.html", {"view": view, "poll_s": POLL_S})

    def error_page(request: Request, status: int, message: str) -> Response:
        return render(request, "error.html", {"status": status, "message": message}, status)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, str(exc))

    async def unreachable(request: Request, exc: Exception) -> Response:
        return error_page(request, 503, f"the run log is unreachable: {exc}")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_page(request, exc.status_code, exc.detail)

    return Starlette(
        routes=[
            Route("/", runs),
            Route("/runs/{run_id}", run_page),
            Route("/runs/{run_id}/live", live),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={
            RunNotFoundError: not_found,
            QueueError: unreachable,
            HTTPException: http_error,
        },
    )


def _run_id(request: Request) -> str:
    """The path's run id.

    Raises:
        HTTPException: 400 when it is not a run id.
    """
    run_id = str(request.path_params["run_id"])
    if not valid_run_id(run_id):
        raise HTTPException(400, f"{run_id[:80]!r} is not a run id (letters, digits, _ and -)")
    return run_id
