"""A fake LLM HTTP endpoint: records each request and answers with queued replies.

Generic over paths, so it stands in for the Anthropic Messages API (``POST /v1/messages``)
and for OpenAI-compatible chat completions (``POST /v1/chat/completions``) alike. The SDKs
under test talk real HTTP to it; nothing is patched.

Usage::

    with FakeLLMServer() as server:
        server.reply({"id": "msg_1", ...})                       # 200 with this JSON body
        server.reply(ErrorReply(429, {...}, {"retry-after": "7"}))  # an error status
        server.reply(DROP)                                       # the connection dropped
        client = AnthropicClient(api_key="test", model="...", base_url=server.url)
        ...
        server.requests[0].body   # the JSON the SDK sent
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

POLL_S = 0.02
"""How often the serving thread checks for shutdown (seconds): bounds each teardown."""


@dataclass
class RecordedRequest:
    """One request the server received: ``headers`` with lower-case names, ``body`` parsed."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ErrorReply:
    """A non-200 reply: HTTP ``status``, a JSON ``body`` and extra ``headers``."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


DROP = ErrorReply(0, None)
"""A reply that is no reply: the server closes the connection unanswered (a dropped
connection, as a proxy or load balancer failing mid-request does)."""

Reply = dict[str, Any] | ErrorReply | tuple[int, Any, dict[str, str]]
"""A queued reply: a JSON body (status 200), an ErrorReply, or ``(status, body, headers)``."""


def _as_error_reply(reply: Reply) -> ErrorReply:
    if isinstance(reply, ErrorReply):
        return reply
    if isinstance(reply, tuple):
        status, body, headers = reply
        return ErrorReply(status, body, headers)
    return ErrorReply(200, reply)


Responder = Callable[[RecordedRequest], Reply]
"""Computes the reply to a request (a fake that answers by what it is asked)."""


class FakeLLMServer:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) replaying queued replies in order.

    A request that finds the queue empty gets ``responder``'s reply when there is one, else
    HTTP 500 (with ``x-should-retry: false`` so SDKs do not retry), counted in ``unexpected``.
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self.unexpected = 0
        self._replies: deque[ErrorReply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_S}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash, no path)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, *replies: Reply) -> None:
        """Queue replies; each request consumes the oldest."""
        with self._lock:
            self._replies.extend(_as_error_reply(r) for r in replies)

    def bodies(self, path: str | None = None) -> list[Any]:
        """The JSON bodies received (only those for ``path`` when given), in order."""
        with self._lock:
            return [r.body for r in self.requests if path is None or r.path == path]

    def _take(self, request: RecordedRequest) -> ErrorReply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
            if self.responder is None:
                self.unexpected += 1
        if self.responder is not None:
            return _as_error_reply(self.responder(request))
        message = f"fake server: no reply queued for {request.method} {request.path}"
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return ErrorReply(500, body, {"x-should-retry": "false"})

    def start(self) -> FakeLLMServer:
        """Serve in a daemon thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            request = RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            self._send(server._take(request))

        def _send(self, reply: ErrorReply) -> None:
            if reply.status == 0:  # DROP
                self.close_connection = True
                return
            payload = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler
