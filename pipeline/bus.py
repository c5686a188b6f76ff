"""The ZeroMQ publisher: owns the socket, framing, sequence numbers and drop counting.

The socket is an XPUB (a PUB that also sees subscriptions), so the publisher
can wait for a first subscriber before sending. Sends never block inference
for live use: a full send queue (high-water mark) drops the message and counts
it. With ``lossless`` on, a full queue pushes back instead, so a file replay
loses nothing once a subscriber is connected; at close, what is still queued
gets :data:`CLOSE_LINGER_MS` to leave.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import zmq

from pipeline.curve import CurveServer, ServerContext
from pipeline.errors import PublishError
from pipeline.schema import encode
from pipeline.zmq_direct import DirectSender, direct_sender

log = logging.getLogger(__name__)

POLL_SLICE_MS = 50
CLOSE_LINGER_MS = 2000
"""At close, how long messages still queued get to reach their subscribers (the last results of a run, its end
status) before they are let go of, so closing never hangs on a subscriber that has stopped reading."""


class BusPublisher:
    """A bound XPUB socket sending ``[topic, JSON body]`` messages."""

    def __init__(
        self,
        endpoint: str,
        send_hwm: int = 1000,
        lossless: bool = False,
        curve: CurveServer | None = None,
        keep_lock: bool = True,
    ) -> None:
        """``keep_lock``: send without giving up the interpreter lock where pyzmq's libzmq can be called directly
        (see :mod:`pipeline.zmq_direct`); False: always through pyzmq."""
        self.endpoint = endpoint
        self.lossless = lossless
        self._ctx = ServerContext(curve)
        self._sock = self._ctx.socket(zmq.XPUB)
        if curve is None and not _is_local(endpoint):
            log.warning("publishing unencrypted to anyone who can reach %s (see publish.curve)", endpoint)
        self._sock.setsockopt(zmq.SNDHWM, send_hwm)
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises EAGAIN, which we count or wait on
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise PublishError(f"cannot bind publisher to '{endpoint}': {exc}") from exc
        self._direct: DirectSender | None = direct_sender() if keep_lock else None
        self.subscriptions = 0
        self.dropped: Counter[str] = Counter()
        self.sent = 0
        self._closed = False

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def wait_for_subscriber(self, stop: threading.Event, timeout_s: float | None = None) -> bool:
        """Block until a subscriber has subscribed, ``stop`` is set or ``timeout_s`` passes."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not stop.is_set():
            self._drain_subscriptions()
            if self.subscriptions > 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._sock.poll(POLL_SLICE_MS, zmq.POLLIN)
        return False

    def send(
        self, topic: str, body: dict[str, Any], stop: threading.Event | None = None, attachment: bytes | None = None
    ) -> bool:
        """Send one message (``attachment``: a binary third part); returns False if it was dropped (counted)."""
        parts = [topic.encode("utf-8"), encode(body)]
        if attachment is not None:
            parts.append(attachment)
        while True:
            if self._send_now(parts):
                self.sent += 1
                return True
            if not self.lossless or (stop is not None and stop.is_set()):
                self.dropped[topic] += 1
                return False
            self._sock.poll(POLL_SLICE_MS, zmq.POLLOUT)

    def _send_now(self, parts: list[bytes]) -> bool:
        """Queue the message without waiting; False when the send queue is full."""
        if self._direct is not None:
            return self._direct.send(self._sock.underlying, parts)
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._sock.close(linger=CLOSE_LINGER_MS)
        self._ctx.term()


def _is_local(endpoint: str) -> bool:
    """Loopback TCP, IPC and in-process endpoints are not reachable from the network."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
