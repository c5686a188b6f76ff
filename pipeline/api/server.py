"""An ASGI app served by uvicorn in a daemon thread, off the frame path: the port is bound before the thread
starts (a taken port is a one-line start-up error), signals stay the main thread's, and ``close`` stops it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0


def bind(host: str, port: int, what: str) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """Serves ``app`` on ``host:port`` (0: a free port, then in ``port``) from its own thread and event loop."""

    def __init__(self, app: Any, host: str, port: int, what: str = "metrics") -> None:
        self._sock = bind(host, port, what)
        self.port = int(self._sock.getsockname()[1])
        self._what = what
        config = uvicorn.Config(
            app,
            log_config=None,  # the process's logging (redacting, JSON) stays as set
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"{what}-http", daemon=True)

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._sock])  # not the main thread: uvicorn leaves signals alone
        except BaseException:  # SystemExit from a failed start-up included
            log.exception("%s: the HTTP server stopped", self._what)

    def start(self) -> None:
        """Start serving; returns once requests are answered."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ConfigError(f"cannot serve {self._what} on port {self.port}: the HTTP server did not start")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop serving (open connections get ``timeout_graceful_shutdown``) and free the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(STOP_TIMEOUT_S)
        self._sock.close()
