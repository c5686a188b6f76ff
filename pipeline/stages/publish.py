"""The publish stage: results, statuses, events and counts onto the bus; the face thread's hand-over; recordings."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.analytics.events import Event
from pipeline.analytics.stream import StreamAnalytics
from pipeline.analytics.thumbnails import thumbnail
from pipeline.bus import BusPublisher
from pipeline.config import PrivacyConfig
from pipeline.faces.messages import FaceJob, FaceResult
from pipeline.messages import EndOfStream, FrameResult, MaskFormat, ResultItem
from pipeline.privacy import redacted
from pipeline.queues import BoundedQueue
from pipeline.recorder import FrameSink, NullSink
from pipeline.schema import (
    COUNTS_TOPIC,
    DETECTIONS_TOPIC,
    EVENTS_TOPIC,
    FACES_TOPIC,
    STATUS_TOPIC,
    detections_body,
    status_body,
    topic_for,
)
from pipeline.secrecy import redact_json
from pipeline.stages.base import GET_TIMEOUT_S, FailureHandler, StageThread
from pipeline.supervision import StateChange

log = logging.getLogger(__name__)

LATENCY_WINDOW = 100_000
"""Capture→publish latencies kept for percentiles (the most recent ones)."""


@dataclass(frozen=True, slots=True)
class StreamAdded:
    """A stream added at run time, announced to the publish stage through its state queue."""

    stream_id: str
    privacy: PrivacyConfig
    analytics: StreamAnalytics | None = None


@dataclass(frozen=True, slots=True)
class FaceLink:
    """The publish stage's side of the face thread: where it offers frames and collects faces."""

    jobs: BoundedQueue[FaceJob]
    results: BoundedQueue[FaceResult]
    every_n_frames: int
    settled: Callable[[], bool]
    """True when the face thread holds no job (checked before a stream's end is published)."""
    model: str
    """The face detector's name (``faces.<stream_id>`` messages), or ``""`` when the main model finds faces."""

    SETTLE_TIMEOUT_S = 30.0


class PublishStage(StageThread):
    """Publishes results and lifecycle status; the last stage, it ends when every stream has ended."""

    def __init__(
        self,
        inp: BoundedQueue[ResultItem],
        bus: BusPublisher,
        stream_ids: Sequence[str],
        model_name: str,
        engine_info: dict[str, Any],
        stop: threading.Event,
        on_failure: FailureHandler,
        wait_for_subscriber: bool = False,
        subscriber_timeout_s: float | None = None,
        sink: FrameSink | None = None,
        analytics: Mapping[str, StreamAnalytics] | None = None,
        thumbnail_quality: int | None = None,
        privacy: Mapping[str, PrivacyConfig] | None = None,
        mask_format: MaskFormat | None = None,
        faces: FaceLink | None = None,
        state_changes: BoundedQueue[StateChange | StreamAdded] | None = None,
    ) -> None:
        super().__init__("publish", stop, on_failure)
        self.state_changes = state_changes
        """Live sources' :class:`~pipeline.supervision.StateChange` messages, sent as ``status.<stream_id>``."""
        self.faces = faces
        self.open_ended = False
        """Streams may be added at run time: keep going with none left, until the stop event."""
        self.waiting = False
        """Waiting for a first subscriber (``publish.wait_for_subscriber``): not beating, yet healthy."""
        self.on_latency: Callable[[str, float], None] | None = None
        """Called with each published frame's capture→publish seconds (metrics); ``None``: nobody listens."""
        self.face_seq: dict[str, int] = dict.fromkeys(stream_ids, 0)
        self.known_faces: dict[str, dict[int, Any]] = {sid: {} for sid in stream_ids}
        """Per stream, track id → what the face thread knows of that track's face (main model finds faces)."""
        self.latest_faces: dict[str, tuple[int, np.ndarray]] = {}
        """Per stream, the frame index and face boxes of the face thread's latest result."""
        self.mask_format = mask_format or MaskFormat()
        self.privacy = dict(privacy or {})
        """Per stream: what is redacted in thumbnails and recordings."""
        self.analytics = dict(analytics or {})
        """Per stream: tracking, lines, zones and events (absent when tracking is off)."""
        self.thumbnail_quality = thumbnail_quality
        """JPEG quality of event thumbnails; ``None``: no thumbnails."""
        self.sink: FrameSink = sink or NullSink()
        self.inp = inp
        self.bus = bus
        self.stream_ids = list(stream_ids)
        self.model_name = model_name
        self.engine_info = engine_info
        self.wait_for_subscriber = wait_for_subscriber
        self.subscriber_timeout_s = subscriber_timeout_s
        self.seq: dict[str, int] = dict.fromkeys(self.stream_ids, 0)
        self.ended: dict[str, EndOfStream] = {}
        self.first_publish_at: float | None = None
        self.last_latency_ms = 0.0
        self.last_objects = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.latency_ms_by_stream: dict[str, float] = {}

    def loop(self) -> None:
        try:
            if self.wait_for_subscriber:
                log.info("waiting for a subscriber on %s", self.bus.endpoint)
                self.waiting = True
                got_one = self.bus.wait_for_subscriber(self.stop_event, self.subscriber_timeout_s)
                self.waiting = False
                if not got_one and not self.stop_event.is_set():
                    log.warning("no subscriber within %s s; publishing anyway", self.subscriber_timeout_s)
            for sid in self.stream_ids:
                self._status(sid, "start", engine=self.engine_info)
            while (self.open_ended or len(self.ended) < len(self.stream_ids)) and not self.stop_event.is_set():
                self.beat()
                self._send_states()
                self._collect_faces()
                item = self.inp.get(GET_TIMEOUT_S)
                if isinstance(item, (FrameResult, EndOfStream)) and item.stream_id not in self.seq:
                    self._send_states()  # a stream added at run time: its StreamAdded is queued before its frames
                if isinstance(item, FrameResult):
                    started = time.perf_counter()
                    self._publish(item)
                    self.clock.add(time.perf_counter() - started)
                elif isinstance(item, EndOfStream):
                    self._end(item)
        finally:
            self.sink.close()
            for sid in self.stream_ids:
                if sid not in self.ended:
                    self._finish_analytics(sid)
                    self._status(sid, "stopped")

    def _publish(self, result: FrameResult) -> None:
        sid = result.stream_id
        now = time.time()
        if self.first_publish_at is None:
            self.first_publish_at = now
        everything = result  # with the boxes that only fed the tracker: all of them are redacted in images
        analytics = self.analytics.get(sid)
        analysis = analytics.process(result) if analytics is not None else None
        track_ids = None
        if analysis is not None:
            keep = analysis.published
            result = result.subset(keep)
            track_ids = analysis.track_ids[keep]
        annotations = self._face_annotations(result, track_ids)
        body = detections_body(result, self.seq[sid], self.model_name, now, track_ids, self.mask_format, annotations)
        self.bus.send(topic_for(DETECTIONS_TOPIC, sid), body, self.stop_event)
        self.seq[sid] += 1
        self._offer_faces(result, track_ids)
        pictured = self._pictured(everything, result, analysis.events if analysis is not None else [])
        if analysis is not None:
            for event in analysis.events:
                self._event(event, pictured)
            if analysis.counts is not None:
                self.bus.send(topic_for(COUNTS_TOPIC, sid), analysis.counts, self.stop_event)
        self.last_latency_ms = (now - result.frame.captured_at) * 1000.0
        self.latency_ms_by_stream[sid] = self.last_latency_ms
        self.latencies_ms.append(self.last_latency_ms)
        if self.on_latency is not None:
            self.on_latency(sid, self.last_latency_ms / 1000.0)
        self.last_objects = len(result)
        if pictured is not None:
            self.sink.write(pictured, track_ids)

    def _pictured(self, everything: FrameResult, published: FrameResult, events: list[Event]) -> FrameResult | None:
        """``published`` on the redacted frame, for the images of this frame that leave the box (the recording,
        thumbnails of new events); ``None`` when none will."""
        thumbnails = self.thumbnail_quality is not None and any(e.type == "new" for e in events)
        if isinstance(self.sink, NullSink) and not thumbnails:
            return None
        privacy = self.privacy.get(published.stream_id)
        if privacy is None:
            return published
        faces = self._recent_faces(published)
        return replace(published, frame=redacted(everything, privacy, faces).frame)

    def _event(self, event: Event, result: FrameResult | None = None) -> None:
        attachment = None  # ``result`` is already redacted (see _pictured)
        if self.thumbnail_quality is not None and result is not None and event.type == "new":
            attachment = thumbnail(result.frame.host_image(), event.box, self.thumbnail_quality)
        body = event.to_json()
        if attachment is not None:
            body["thumbnail"] = "jpeg"
        self.bus.send(topic_for(EVENTS_TOPIC, event.stream_id), body, self.stop_event, attachment)

    def _finish_analytics(self, stream_id: str) -> None:
        """Close the stream's open events and send its final counts."""
        analytics = self.analytics.pop(stream_id, None)
        if analytics is None:
            return
        events, counts = analytics.finish()
        for event in events:
            self._event(event)
        if analytics.counting:
            self.bus.send(topic_for(COUNTS_TOPIC, stream_id), counts, self.stop_event)

    def _send_states(self) -> None:
        queue = self.state_changes
        while queue is not None and (change := queue.get_nowait()) is not None:
            if isinstance(change, StreamAdded):
                self._add_stream(change)
                continue
            extra: dict[str, Any] = {"attempt": change.attempt} if change.state in ("reconnecting", "offline") else {}
            if change.retry_in_s is not None:
                extra["retry_in_s"] = change.retry_in_s
            if change.reason:
                extra["reason"] = change.reason
            self._status(change.stream_id, change.state, **extra)

    def _add_stream(self, added: StreamAdded) -> None:
        """A stream added at run time: it arrives here (through the state queue) before any of its results."""
        sid = added.stream_id
        self.ended.pop(sid, None)
        if sid not in self.stream_ids:
            self.stream_ids.append(sid)
        self.seq[sid] = self.seq.get(sid, 0)  # a stream added again under an old id continues its seq
        self.face_seq.setdefault(sid, 0)
        self.known_faces.setdefault(sid, {})
        if added.analytics is not None:
            self.analytics[sid] = added.analytics
        self.privacy[sid] = added.privacy
        self._status(sid, "start", engine=self.engine_info)

    # -- faces ---------------------------------------------------------------------------------------------
    def _offer_faces(self, result: FrameResult, track_ids: np.ndarray | None) -> None:
        link = self.faces
        if link is None or result.frame.frame_index % link.every_n_frames:
            return
        ids = track_ids if track_ids is not None else np.full(len(result), -1, np.int64)
        link.jobs.put(FaceJob(result, ids))

    def _recent_faces(self, result: FrameResult) -> np.ndarray | None:
        """The face thread's latest face boxes for this stream while still recent (for redaction)."""
        link, recent = self.faces, self.latest_faces.get(result.stream_id)
        if link is None or recent is None:
            return None
        frame_index, boxes = recent
        fresh = result.frame.frame_index - frame_index <= 2 * link.every_n_frames
        return boxes if fresh else None

    def _face_annotations(self, result: FrameResult, track_ids: np.ndarray | None) -> list[dict[str, Any]] | None:
        """Identity (or anonymous id) of the main model's face detections whose track the face thread knows."""
        known = self.known_faces.get(result.stream_id)
        if not known or track_ids is None:
            return None
        return [known[t].annotation() if t in known else {} for t in track_ids.tolist()]

    def _collect_faces(self, settle: bool = False) -> None:
        """Publish what the face thread has found; with ``settle``, first wait until it is idle."""
        link = self.faces
        if link is None:
            return
        if settle:
            deadline = time.monotonic() + link.SETTLE_TIMEOUT_S
            while not link.settled() and time.monotonic() < deadline and not self.stop_event.is_set():
                time.sleep(0.01)
        while (found := link.results.get_nowait()) is not None:
            self._publish_faces(found)

    def _publish_faces(self, found: FaceResult) -> None:
        sid = found.stream_id
        self.latest_faces[sid] = (found.faces.frame.frame_index, found.faces.boxes[:, :4].copy())
        if link_model := (self.faces.model if self.faces else ""):
            body = detections_body(
                found.faces,
                self.face_seq[sid],
                link_model,
                time.time(),
                found.track_ids,
                self.mask_format,
                found.annotations() if any(w is not None for w in found.who) else None,
            )
            self.bus.send(topic_for(FACES_TOPIC, sid), body, self.stop_event)
            self.face_seq[sid] += 1
        else:
            known = self.known_faces[sid]
            for track, who in zip(found.track_ids.tolist(), found.who, strict=True):
                if who is not None:
                    known[track] = who
        for event in found.events:
            self._event(event)

    def _end(self, eos: EndOfStream) -> None:
        self._send_states()
        self._collect_faces(settle=True)
        self._finish_analytics(eos.stream_id)
        self.ended[eos.stream_id] = eos
        if eos.error is not None:
            self._status(eos.stream_id, "error", message=eos.error, frames=eos.frames)
        elif eos.stopped:
            self._status(eos.stream_id, "stopped", frames=eos.frames)
        else:
            self._status(eos.stream_id, "eos", frames=eos.frames)

    def _status(self, stream_id: str, event: str, **extra: Any) -> None:
        body = status_body(stream_id, event, time.time(), **redact_json(extra))
        self.bus.send(topic_for(STATUS_TOPIC, stream_id), body, self.stop_event)
