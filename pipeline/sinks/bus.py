"""The bus as the pipeline's one essential sink: detections, events and counts, and the statuses beside them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.analytics.events import Event
from pipeline.bus import BusPublisher
from pipeline.messages import FrameResult, MaskFormat
from pipeline.schema import (
    COUNTS_TOPIC,
    DETECTIONS_TOPIC,
    EVENTS_TOPIC,
    STATUS_TOPIC,
    detections_body,
    status_body,
    topic_for,
)
from pipeline.sinks.base import Published, ResultSink, StreamEnding

log = logging.getLogger(__name__)

Annotate = Callable[[FrameResult, np.ndarray | None], list[dict[str, Any]] | None]
"""Per detection, what else is known of it (the face thread's identities), or ``None``."""
Thumbnail = Callable[[Published, Event], bytes | None]
"""A JPEG of an event's object in a published frame, or ``None`` for none."""


class BusWriter:
    """Messages onto the bus by kind: statuses, detections, events and counts (the publish thread's only way out)."""

    def __init__(
        self,
        bus: BusPublisher,
        stop: threading.Event,
        model: str,
        engine_info: dict[str, Any],
        mask_format: MaskFormat | None = None,
    ) -> None:
        self.bus = bus
        self.stop = stop
        self.model = model
        """The main model's name (``model`` of ``detections`` messages)."""
        self.engine_info = engine_info
        """Sent with each stream's ``start`` status."""
        self.mask_format = mask_format or MaskFormat()

    def status(self, stream_id: str, event: str, **extra: Any) -> float:
        """Send a stream's status (``extra`` as the publish stage redacted it); returns its time (``at``)."""
        at = time.time()
        body = status_body(stream_id, event, at, **extra)
        self.bus.send(topic_for(STATUS_TOPIC, stream_id), body, self.stop)
        return at

    def detections(
        self,
        topic: str,
        result: FrameResult,
        seq: int,
        model: str,
        track_ids: np.ndarray | None = None,
        annotations: list[dict[str, Any]] | None = None,
    ) -> None:
        body = detections_body(result, seq, model, time.time(), track_ids, self.mask_format, annotations)
        self.bus.send(topic_for(topic, result.stream_id), body, self.stop)

    def event(self, event: Event, thumbnail: bytes | None = None) -> None:
        body = event.to_json()
        if thumbnail is not None:
            body["thumbnail"] = "jpeg"
        self.bus.send(topic_for(EVENTS_TOPIC, event.stream_id), body, self.stop, thumbnail)

    def counts(self, stream_id: str, counts: dict[str, Any]) -> None:
        self.bus.send(topic_for(COUNTS_TOPIC, stream_id), counts, self.stop)

    def wait_for_subscriber(self, timeout_s: float | None) -> None:
        """Hold the first message until someone subscribes (``publish.wait_for_subscriber``)."""
        log.info("waiting for a subscriber on %s", self.bus.endpoint)
        if not self.bus.wait_for_subscriber(self.stop, timeout_s) and not self.stop.is_set():
            log.warning("no subscriber within %s s; publishing anyway", timeout_s)


class BusSink(ResultSink):
    """Each published frame's ``detections``, its events (with a thumbnail of each new object) and counts."""

    name = "bus"
    essential = True

    def __init__(self, writer: BusWriter, annotate: Annotate | None = None, thumbnail: Thumbnail | None = None) -> None:
        self.writer = writer
        self.annotate = annotate
        self.thumbnail = thumbnail
        self.seq: dict[str, int] = {}
        """Per stream, the next ``detections`` seq (a stream added again under an old id continues its own)."""

    def on_result(self, published: Published) -> None:
        result, track_ids = published.result, published.track_ids
        annotations = self.annotate(result, track_ids) if self.annotate is not None else None
        seq = self.seq.get(result.stream_id, 0)
        self.writer.detections(DETECTIONS_TOPIC, result, seq, self.writer.model, track_ids, annotations)
        self.seq[result.stream_id] = seq + 1
        for event in published.events:
            new = self.thumbnail is not None and event.type == "new"
            self.writer.event(event, self.thumbnail(published, event) if new and self.thumbnail else None)
        if published.counts is not None:
            self.writer.counts(published.stream_id, published.counts)

    def on_stream_end(self, ending: StreamEnding) -> None:
        for event in ending.events:
            self.writer.event(event)
        if ending.counts is not None:
            self.writer.counts(ending.stream_id, ending.counts)
