"""Everything edgesight works out about one stream beyond its detections: tracks, crossings, zones, events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.analytics.events import Event, Observation, OpenEvent, instant
from pipeline.analytics.geometry import anchors
from pipeline.analytics.lines import LineCounter
from pipeline.analytics.tracking import StreamTracker
from pipeline.analytics.zones import ZoneMonitor
from pipeline.config import EventsConfig, StreamConfig, TrackingConfig
from pipeline.messages import FrameResult
from pipeline.schema import COUNTS_SCHEMA


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one frame produced: a track id per detection row, events, and counts when they are due.

    ``published`` marks the rows at or over the model's threshold; the rest only helped the tracker.
    """

    track_ids: np.ndarray
    published: np.ndarray
    events: list[Event]
    counts: dict[str, Any] | None


class StreamAnalytics:
    """One stream's tracker, lines, zones and object lifecycles; fed frame results in order."""

    def __init__(self, stream: StreamConfig, tracking: TrackingConfig, events: EventsConfig, conf: float) -> None:
        self.stream_id = stream.id
        self.events_config = events
        self.track_buffer = tracking.track_buffer
        self.conf = conf
        self.tracker = StreamTracker(tracking, conf)
        self.lines = [LineCounter(c) for c in stream.lines]
        self.zones = [ZoneMonitor(c, stream.id, events.update_interval_s) for c in stream.zones]
        self._objects: dict[int, OpenEvent] = {}
        self._last_counts_pts: float | None = None
        self._last_frame: tuple[int, float] = (0, 0.0)

    def process(self, result: FrameResult, track_ids: np.ndarray | None = None) -> Analysis:
        """Track one frame's detections (or take ``track_ids`` as given, e.g. ground truth) and analyse them."""
        frame = result.frame
        size = (frame.width, frame.height)
        boxes = result.boxes
        ids = self.tracker.update(boxes, (frame.height, frame.width)) if track_ids is None else track_ids
        points = anchors(boxes)
        events: list[Event] = []
        labels = result.labels
        visible = {int(t) for t in ids.tolist() if t >= 0}
        for zone in self.zones:
            zone.begin_frame(visible)
        for row, track_id, anchor in zip(boxes.tolist(), ids.tolist(), points, strict=True):
            if track_id < 0:
                continue
            class_id = int(row[5])
            obs = Observation(
                track_id,
                class_id,
                labels.get(class_id, str(class_id)),
                float(row[4]),
                (row[0], row[1], row[2], row[3]),
                frame.frame_index,
                frame.pts_ms,
                frame.captured_at,
            )
            events += self._object(obs)
            for line in self.lines:
                crossing = line.update(track_id, obs.label, class_id, obs.score, anchor, size)
                if crossing is not None:
                    events.append(
                        instant("line_cross", self.stream_id, obs, line=line.config.name, direction=crossing.direction)
                    )
            for zone in self.zones:
                events += zone.update(obs, anchor, size)
        events += self._end_lost(frame.frame_index)
        self._last_frame = (frame.frame_index, frame.pts_ms)
        published = boxes[:, 4] >= self.conf
        return Analysis(ids, published, events, self._counts_if_due(frame.frame_index, frame.pts_ms))

    def finish(self) -> tuple[list[Event], dict[str, Any]]:
        """At the end of the stream: close every open event and give the final counts."""
        events: list[Event] = []
        for track_id in list(self._objects):
            events += self._end(track_id)
        return events, self.counts_body(*self._last_frame)

    def _object(self, obs: Observation) -> list[Event]:
        open_event = self._objects.get(obs.track_id)
        if open_event is None:
            self._objects[obs.track_id] = OpenEvent("object", self.stream_id, obs)
            return [self._objects[obs.track_id].event("new")] if self.events_config.objects else []
        open_event.observe(obs)
        if (
            self.events_config.objects
            and obs.pts_ms - open_event.last_sent_pts >= self.events_config.update_interval_s * 1000
        ):
            open_event.last_sent_pts = obs.pts_ms
            return [open_event.event("update")]
        return []

    def _end_lost(self, frame_index: int) -> list[Event]:
        gone = [t for t, e in self._objects.items() if frame_index - e.last.frame_index > self.track_buffer]
        return [ev for t in gone for ev in self._end(t)]

    def _end(self, track_id: int) -> list[Event]:
        open_event = self._objects.pop(track_id)
        events = []
        for zone in self.zones:
            events += zone.end_track(track_id, open_event.last)
        for line in self.lines:
            line.forget(track_id)
        if self.events_config.objects:
            events.append(open_event.event("end"))
        return events

    @property
    def counting(self) -> bool:
        """Whether this stream has lines or zones, and so sends ``counts`` messages."""
        return bool(self.lines or self.zones)

    def _counts_if_due(self, frame_index: int, pts_ms: float) -> dict[str, Any] | None:
        if not self.counting:
            return None
        last = self._last_counts_pts
        if last is not None and pts_ms - last < self.events_config.counts_interval_s * 1000:
            return None
        return self.counts_body(frame_index, pts_ms)

    def counts_body(self, frame_index: int, pts_ms: float) -> dict[str, Any]:
        self._last_counts_pts = pts_ms
        return {
            "schema": COUNTS_SCHEMA,
            "stream_id": self.stream_id,
            "frame_index": frame_index,
            "pts_ms": round(pts_ms, 3),
            **self.running_counts(),
        }

    def running_counts(self) -> dict[str, Any]:
        """Each line's and zone's counts now (read from other threads too: plain integers, read without a lock)."""
        return {
            "lines": {line.config.name: line.to_json() for line in self.lines},
            "zones": {zone.config.name: zone.to_json() for zone in self.zones},
        }
