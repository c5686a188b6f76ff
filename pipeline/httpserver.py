"""The small HTTP server behind the metrics/health port and the browser preview."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

Answer = Callable[[BaseHTTPRequestHandler], None]
"""Answers one GET (the request's path is ``request.path``), usually with :func:`reply`."""


def reply(request: BaseHTTPRequestHandler, code: int, kind: str, body: bytes) -> None:
    """Send a whole response: status, content type and length, no caching, the body."""
    request.send_response(code)
    request.send_header("Content-Type", kind)
    request.send_header("Content-Length", str(len(body)))
    request.send_header("Cache-Control", "no-store")
    request.end_headers()
    request.wfile.write(body)


class HttpServer:
    """Serves GET requests with ``answer`` in daemon threads; a failing answer is a logged 500, never a dead server."""

    def __init__(self, host: str, port: int, answer: Answer, what: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client left
                except Exception as exc:
                    log.exception("%s: answering %s failed", what, self.path)
                    reply(self, 500, "text/plain", f"internal error: {type(exc).__name__}: {exc}\n".encode())

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(f"{what}: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{what}-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving (if started) and free the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
