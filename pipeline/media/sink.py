"""The sink that keeps events: each event message in the store, its snapshot and its clip."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from pipeline.analytics.events import Event
from pipeline.config import EventsConfig
from pipeline.media.clips import ClipRecorder
from pipeline.media.packets import PacketRing
from pipeline.media.snapshots import Snapshots, SnapshotWriter
from pipeline.media.store import EventStore
from pipeline.sinks.base import Published, ResultSink, StreamEnding

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0


class EventMediaSink(ResultSink):
    """Records every event message in the :class:`~pipeline.media.store.EventStore`, and makes its snapshot and
    clip where ``events.snapshots`` and ``events.clips`` ask. :meth:`mark` puts their ids on the event messages
    (the publish stage calls it before any sink sees them), so the bus, MQTT and webhooks carry them."""

    name = "events"

    def __init__(
        self,
        config: EventsConfig,
        store: EventStore,
        picture: Callable[[Published], np.ndarray],
        live: Callable[[str], bool] = lambda stream_id: True,
        camera: Callable[[str], PacketRing | None] = lambda stream_id: None,
    ) -> None:
        """``picture``: a published frame as it may leave the box (redacted where the stream's privacy says);
        ``live``: whether a stream is a live source (its clips drop frames rather than wait for the encoder);
        ``camera``: a stream's own compressed packets, where its clips are cut from them (not encoded here)."""
        self.live = live
        self.camera = camera
        self.config = config
        self.store = store
        self.picture = picture
        self.writer = SnapshotWriter(config.snapshots, store) if config.snapshots is not None else None
        self.snapshots = Snapshots(self.writer, picture) if self.writer is not None else None
        self.clips: dict[str, ClipRecorder] = {}
        self._next_prune = 0.0

    @property
    def drops(self) -> int:
        writer = self.writer.dropped if self.writer is not None else 0
        return writer + sum(r.dropped for r in self.clips.values())

    def mark(self, events: tuple[Event, ...]) -> tuple[Event, ...]:
        """The events with the ids of their snapshot and clip (each the event's id) where those are made."""
        return tuple(self._marked(event) for event in events)

    def _marked(self, event: Event) -> Event:
        extra = dict(event.extra)
        if self.config.snapshots is not None:
            extra["snapshot"] = event.event_id
        clips = self.config.clips
        if clips is not None and event.kind in clips.kinds:
            extra["clip"] = event.event_id
        return replace(event, extra=extra) if extra != event.extra else event

    def on_stream_added(self, stream_id: str) -> None:
        if self.config.clips is not None and stream_id not in self.clips:
            self.clips[stream_id] = ClipRecorder(
                stream_id, self.config.clips, self.store, self.live(stream_id), self.camera(stream_id)
            )

    def on_result(self, published: Published) -> None:
        recorder = self.clips.get(published.stream_id)
        if recorder is not None:
            recorder.frame(lambda: self.picture(published), published.result.frame.pts_ms)
        for event in published.events:
            self.store.record(event.to_json())
            if recorder is not None and "clip" in event.extra:
                if event.type == "new":
                    recorder.open(event.event_id, event.pts_ms)
                if event.type == "end" or event.ended_at is not None or event.kind not in ("object", "loiter"):
                    recorder.close(event.event_id, event.pts_ms)
        if self.snapshots is not None:
            self.snapshots.on_result(published)

    def on_stream_end(self, ending: StreamEnding) -> None:
        recorder = self.clips.pop(ending.stream_id, None)
        for event in ending.events:
            self.store.record(event.to_json())
            if recorder is not None:
                recorder.close(event.event_id)
        if self.snapshots is not None:
            self.snapshots.on_end(ending.events)
        if recorder is not None:
            recorder.finish()

    def poll(self) -> None:
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.store.prune()

    def close(self) -> None:
        for recorder in self.clips.values():
            recorder.finish()
        self.clips.clear()
        if self.writer is not None:
            self.writer.close()
