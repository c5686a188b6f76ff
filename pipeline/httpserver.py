"""The small HTTP server behind the browser preview (and the port checks of ``edgesight check``)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

Answer = Callable[[BaseHTTPRequestHandler], None]
"""Answers one GET (the request's path is ``request.path``), usually with :func:`reply`."""

CHUNK = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def reply(request: BaseHTTPRequestHandler, code: int, kind: str, body: bytes) -> None:
    """Send a whole response: status, content type and length, no caching, the body."""
    request.send_response(code)
    request.send_header("Content-Type", kind)
    request.send_header("Content-Length", str(len(body)))
    request.send_header("Cache-Control", "no-store")
    request.end_headers()
    request.wfile.write(body)


def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """The first and last byte a ``Range`` header asks of ``size`` bytes; ``None``: the whole file (no header,
    or one that is not a single byte range, which may be ignored); ``False``: a range past the end (416)."""
    match = _RANGE.match(header or "")
    if match is None or match[1] == match[2] == "":
        return None
    if match[1] == "":  # the last N bytes
        last = int(match[2])
        return (max(0, size - last), size - 1) if last > 0 and size > 0 else False
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if match[2] and first > last:
        return None  # not a valid range: ignored
    return (first, min(last, size - 1)) if first < size else False


def send_file(request: BaseHTTPRequestHandler, path: Path, kind: str) -> None:
    """Send a file, or the part a ``Range: bytes=…`` header asks for (206), as browsers seeking in a video do."""
    size = path.stat().st_size
    span = byte_range(request.headers.get("Range"), size)
    if span is False:
        request.send_response(416)
        request.send_header("Content-Range", f"bytes */{size}")
        request.send_header("Content-Length", "0")
        request.end_headers()
        return
    first, last = span if isinstance(span, tuple) else (0, size - 1)
    request.send_response(206 if isinstance(span, tuple) else 200)
    request.send_header("Content-Type", kind)
    request.send_header("Content-Length", str(last - first + 1))
    request.send_header("Accept-Ranges", "bytes")
    request.send_header("Cache-Control", "private, max-age=3600")
    if isinstance(span, tuple):
        request.send_header("Content-Range", f"bytes {first}-{last}/{size}")
    request.end_headers()
    with path.open("rb") as file:
        file.seek(first)
        left = last - first + 1
        while left > 0:
            data = file.read(min(CHUNK, left))
            if not data:
                break
            request.wfile.write(data)
            left -= len(data)


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
