"""Each event POSTed as JSON to an HTTP endpoint (``publish.webhook``), from a thread of its own."""

from __future__ import annotations

import base64
import logging
import threading
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline.analytics.events import Event
from pipeline.config import WebhookConfig
from pipeline.queues import BoundedQueue, OverflowPolicy
from pipeline.schema import encode
from pipeline.secrecy import redact
from pipeline.sinks.base import Published, ResultSink, StreamEnding

log = logging.getLogger(__name__)


def without_credentials(url: str) -> str:
    """The URL as logs may show it: no ``user:password@``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def basic_auth(url: str) -> dict[str, str]:
    """An ``Authorization`` header from the URL's ``user:password@``, if it has one."""
    parts = urlsplit(url)
    if parts.username is None:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


class WebhookSink(ResultSink):
    """Queues each event (bounded: past ``queue`` events the oldest is dropped and counted) for a sender thread
    that POSTs it, retrying connection errors and 5xx answers with doubling waits. The publish thread never
    waits for the endpoint."""

    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.where = without_credentials(config.url)
        self.headers = {"Content-Type": "application/json", **basic_auth(config.url), **config.headers}
        parts = urlsplit(config.url)
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.delivered = 0
        self.failed = 0
        """Events given up on: retries spent, or a 4xx answer (retrying would not help)."""
        self._closed = threading.Event()
        self._queue: BoundedQueue[bytes] = BoundedQueue(
            "webhook", config.queue, OverflowPolicy.DROP_OLDEST, self._closed
        )
        self._thread = threading.Thread(target=self._send_loop, name="webhook", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events the full queue dropped (the oldest first)."""
        return sum(self._queue.drops().values())

    @property
    def drops(self) -> int:
        return self.dropped + self.failed

    def on_result(self, published: Published) -> None:
        for event in published.events:
            self._put(event)

    def on_stream_end(self, ending: StreamEnding) -> None:
        for event in ending.events:
            self._put(event)

    def close(self, drain_s: float = 5.0) -> None:
        """Send what is queued (for at most ``drain_s``), then stop."""
        self._queue.join(drain_s)
        self._closed.set()
        self._thread.join(timeout=self.config.timeout_s + 1.0)
        if len(self._queue):
            log.warning("webhook %s: %d events not sent at shutdown", self.where, len(self._queue))

    def _put(self, event: Event) -> None:
        self._queue.put(encode(event.to_json()))

    def _send_loop(self) -> None:
        while not self._closed.is_set():
            body = self._queue.get(timeout=1.0)
            if body is None:
                continue
            try:
                if self._deliver(body):
                    self.delivered += 1
                else:
                    self.failed += 1
            finally:
                self._queue.task_done()

    def _deliver(self, body: bytes) -> bool:
        """POST one event; True once the endpoint takes it (2xx or 3xx)."""
        wait = self.config.retry_wait_s
        for attempt in range(self.config.retries + 1):
            problem = self._post(body)
            if problem is None:
                return True
            if problem.startswith("HTTP 4"):
                log.warning("webhook %s refused an event (%s); not retried", self.where, problem)
                return False
            if attempt < self.config.retries:
                log.debug("webhook %s: %s; retrying in %.1f s", self.where, problem, wait)
                if self._closed.wait(wait):
                    return False
                wait *= 2
            else:
                log.warning("webhook %s: %s after %d attempts; event dropped", self.where, problem, attempt + 1)
        return False

    def _post(self, body: bytes) -> str | None:
        """One POST: ``None`` when it was taken, else what went wrong."""
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as answer:
                answer.read()
            return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return redact(f"cannot reach it: {reason}")
