"""A scripted Anthropic Messages endpoint over HTTPS, run as a compose service by e2e tests.

``POST /v1/messages`` is read as the worker's gateway reads a Messages request
(:func:`worker.gateway.translate`), answered by :class:`crewbox.testing.ScriptedLLM` (the
script's steps; its ``record_dir/calls/`` holds every answered call with its usage: the
ledger) and sent back as the Messages API does (:func:`worker.gateway.message_json`, or
server-sent events for ``stream: true``). Each request's credentials are written to
``record_dir/auth/`` (:class:`AuthRecord`), so a test sees which key reached the endpoint.
A request no step answers gets a 400 naming it (never retried); a scripted error step its
status (``null``: the connection dropped). ``GET /health`` answers 200.

TLS: the server's certificate chain and key are one PEM file (``--cert``), issued by a CA
the test makes (:func:`write_test_ca`); clients trust that CA through ``SSL_CERT_FILE``
(httpx: https://www.python-httpx.org/environment_variables/).

Usage: ``python -m tests.fakes.messages_service --script S.yaml --record DIR --cert PEM
[--port 8443]``.
"""

from __future__ import annotations

import argparse
import json
import ssl
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from crewbox.errors import LLMAPIError, ScriptExhaustedError
from crewbox.llm.base import LLMResponse
from crewbox.testing import ScriptedLLM
from worker.gateway import GatewayRequestError, error_json, message_json, sse_events, translate

PORT = 8443
"""The port the service listens on by default."""


@dataclass
class AuthRecord:
    """What one request carried: its ``key`` ("" when none), the ``header`` that carried it
    (``x-api-key``, or ``authorization`` as a Bearer token, as the Anthropic SDK sends it), and
    the first 300 characters of its system prompt (which caller it was)."""

    key: str
    header: str
    system: str


def auth_records(record_dir: Path) -> list[AuthRecord]:
    """Every request's :class:`AuthRecord` under ``record_dir``, in arrival order."""
    files = sorted((record_dir / "auth").glob("*.json"))
    return [AuthRecord(**json.loads(p.read_text())) for p in files]


def write_test_ca(folder: Path, hostname: str) -> Path:
    """Make a CA (trustme) and a certificate for ``hostname`` it signs: writes
    ``folder/ca.pem`` (what clients trust) and ``folder/server.pem`` (the server's key and
    chain, for ``--cert``), both readable by any uid (test material only). Returns ca.pem."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert(hostname).private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    for name in ("ca.pem", "server.pem"):
        (folder / name).chmod(0o644)
    return folder / "ca.pem"


class ScriptedEndpoint:
    """The endpoint's state: the scripted model and where requests are recorded."""

    def __init__(self, llm: ScriptedLLM, record_dir: Path) -> None:
        self.llm = llm
        self.record_dir = record_dir
        (record_dir / "auth").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record_auth(self, headers: Any, body: dict[str, Any]) -> None:
        """Write one request's :class:`AuthRecord`."""
        system = body.get("system") or ""
        text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
        bearer = headers.get("authorization") or ""
        if headers.get("x-api-key"):
            key, header = headers["x-api-key"], "x-api-key"
        elif bearer.lower().startswith("bearer "):
            key, header = bearer[7:], "authorization"
        else:
            key, header = "", ""
        record = AuthRecord(key=key, header=header, system=text[:300])
        with self._lock:
            path = self.record_dir / "auth" / f"{time.time_ns()}.json"
            path.write_text(json.dumps(asdict(record)))

    def answer(self, body: dict[str, Any]) -> LLMResponse:
        """The scripted answer to a Messages request ``body``.

        Raises:
            GatewayRequestError: ``body`` is not a Messages request.
            ScriptExhaustedError: no step left for it. LLMAPIError: a scripted error.
        """
        system, messages, tools = translate(body)
        return self.llm.complete(
            system=system,
            messages=messages,
            tools=tools or None,
            max_tokens=int(body.get("max_tokens") or 4096),
            model=body.get("model"),
        )


def _handler_for(endpoint: ScriptedEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status = 200 if self.path == "/health" else 404
            self._json(status, {"ok": status == 200})

        def do_POST(self) -> None:
            if self.path.split("?")[0] != "/v1/messages":
                self._json(404, error_json("not_found_error", f"{self.path}: not served"))
                return
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            endpoint.record_auth(self.headers, body)
            try:
                response = endpoint.answer(body)
            except (GatewayRequestError, ScriptExhaustedError) as exc:
                self._json(400, error_json("invalid_request_error", str(exc)))
                return
            except LLMAPIError as exc:
                if exc.status_code is None:
                    self.close_connection = True  # a dropped connection
                    return
                self._json(exc.status_code, error_json("api_error", str(exc)))
                return
            if body.get("stream"):
                self._stream(response)
            else:
                self._json(200, message_json(response))

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def _stream(self, response: LLMResponse) -> None:
            data = b"".join(
                f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()
                for event, payload in sse_events(response)
            )
            self._send(200, "text/event-stream", data)

        def _send(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            print(format % args, flush=True)

    return Handler


def serve(
    endpoint: ScriptedEndpoint, cert: Path, port: int = PORT, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer for ``endpoint`` on ``host:port`` (port 0: a free one), TLS with
    ``cert`` (key and chain in one PEM); the handshake happens in each request's thread. Not
    yet serving."""
    server = ThreadingHTTPServer((host, port), _handler_for(endpoint))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve until killed (see the module docstring for the arguments)."""
    parser = argparse.ArgumentParser(description="a scripted Messages endpoint over HTTPS")
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)
    llm = ScriptedLLM.from_file(args.script, record_dir=args.record)
    server = serve(ScriptedEndpoint(llm, args.record), args.cert, args.port)
    print(f"scripted Messages endpoint on https://0.0.0.0:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
