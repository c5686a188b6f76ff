"""A small client for other Python services: connect, subscribe, iterate typed messages.

    from edgesight_client import Subscriber

    with Subscriber("tcp://127.0.0.1:5555", topics=["detections."]) as sub:
        for msg in sub:
            print(msg.stream_id, msg.seq, len(msg.detections))

ZeroMQ PUB/SUB is lossy by design: a subscriber that connects late misses what
was sent before, and a subscriber that falls behind the publisher's high-water
mark loses messages. The client notices lost detections messages from gaps in
``seq`` and records them in :attr:`Subscriber.gaps`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from types import TracebackType

import zmq

from edgesight_client.curve import CurveClient
from edgesight_client.schema import DetectionsMessage, Message, MessageError, decode
from edgesight_client.validation import require_jsonschema, validate

log = logging.getLogger(__name__)


class Subscriber:
    """A ZeroMQ SUB socket that yields typed messages: detections, status, events and counts.

    With ``validate``, every body is also checked against its JSON Schema (needs ``jsonschema``; see
    :mod:`edgesight_client.validation`), and those that fail count as invalid.
    """

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str] = ("",),
        rcv_hwm: int = 10000,
        curve: CurveClient | None = None,
        validate: bool = False,
    ) -> None:
        if validate:
            require_jsonschema()
        self.endpoint = endpoint
        self._validate = validate
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        if curve is not None:  # an encrypting publisher (publish.curve) admits only keys it knows
            curve.apply(self._sock)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcv_hwm)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        self._sock.connect(endpoint)
        self._last_seq: dict[str, int] = {}
        self.gaps: dict[str, list[tuple[int, int]]] = defaultdict(list)
        """Per stream, inclusive ``(first, last)`` ranges of ``seq`` numbers that never arrived."""
        self.invalid = 0
        self._closed = False

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """The next valid message, or ``None`` if none arrives within ``timeout_s``.

        Messages that are not edgesight's schema (or, with ``validate``, fail its JSON Schema) are logged,
        counted in :attr:`invalid` and skipped.
        """
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        while True:
            if not self._sock.poll(timeout_ms, zmq.POLLIN):
                return None
            parts = self._sock.recv_multipart()
            if len(parts) < 2:
                self.invalid += 1
                log.warning("ignoring a message with %d part(s)", len(parts))
                continue
            try:
                msg = decode(parts[0], parts[1], parts[2] if len(parts) > 2 else None)
                if self._validate:
                    validate(msg.raw)
            except MessageError as exc:
                self.invalid += 1
                log.warning("ignoring a message on '%s': %s", parts[0][:64].decode("utf-8", "replace"), exc)
                continue
            if isinstance(msg, DetectionsMessage):
                self._track_seq(msg)
            return msg

    def _track_seq(self, msg: DetectionsMessage) -> None:
        # detections.<id> gaps are keyed by stream id; other topics with a seq (faces.<id>) by topic
        key = msg.stream_id if msg.topic.startswith("detections.") else msg.topic
        last = self._last_seq.get(key)
        if last is not None and msg.seq > last + 1:
            self.gaps[key].append((last + 1, msg.seq - 1))
        if last is None or msg.seq > last:
            self._last_seq[key] = msg.seq

    @property
    def missed(self) -> int:
        """Detections messages lost so far (sum over every gap)."""
        return sum(b - a + 1 for ranges in self.gaps.values() for a, b in ranges)

    def __iter__(self) -> Iterator[Message]:
        while not self._closed:
            msg = self.recv(0.2)
            if msg is not None:
                yield msg

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
