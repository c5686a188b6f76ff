"""A snapshot per event: the object's best frame, the full frame with its box drawn and a crop, as JPEGs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.analytics.events import Event
from pipeline.config import SnapshotsConfig
from pipeline.media.store import EventStore
from pipeline.queues import BoundedQueue, OverflowPolicy
from pipeline.sinks.base import Published

log = logging.getLogger(__name__)

LASTING = ("object", "loiter")
"""Events that last: their snapshot follows the object's most confident frame until they end."""
BETTER_BY = 0.02
"""A frame replaces the snapshot's when the object's confidence there is higher by at least this much."""
QUEUE = 64
"""Snapshots waiting to be encoded at most; past that the oldest are dropped (counted)."""


@dataclass
class Best:
    """An event's best view so far: a copy of the (redacted) frame, the object's box there, and its confidence."""

    image: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    label: str
    written: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """One snapshot for the writer; drops are counted per ``stream_id``."""

    stream_id: str
    event_id: str
    best: Best


def box_of(row: np.ndarray) -> tuple[float, float, float, float]:
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


def render(image: np.ndarray, best: Best, config: SnapshotsConfig) -> tuple[bytes, bytes]:
    """The full frame with the box and label drawn (scaled to ``max_width``), and the crop around the box."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = best.box
    mx, my = (x2 - x1) * config.crop_margin, (y2 - y1) * config.crop_margin
    cx1, cy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    cx2, cy2 = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    crop = image[cy1:cy2, cx1:cx2] if cx2 > cx1 and cy2 > cy1 else image
    full = image.copy()
    thick = max(2, w // 640)
    cv2.rectangle(full, (int(x1), int(y1)), (int(x2), int(y2)), (0, 200, 255), thick)
    text = f"{best.label} {best.score:.2f}"
    cv2.putText(full, text, (int(x1), max(0, int(y1) - 6)), cv2.FONT_HERSHEY_SIMPLEX, thick * 0.4, (0, 200, 255), thick)
    if w > config.max_width:
        full = cv2.resize(full, (config.max_width, round(h * config.max_width / w)), interpolation=cv2.INTER_AREA)
    quality = [cv2.IMWRITE_JPEG_QUALITY, config.quality]
    return cv2.imencode(".jpg", full, quality)[1].tobytes(), cv2.imencode(".jpg", crop, quality)[1].tobytes()


def write_whole(path: Path, data: bytes) -> None:
    """Write a file so that readers see either none of it or all of it."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)


class SnapshotWriter:
    """Encodes and stores snapshots in a thread of its own, so the publish thread only copies a frame."""

    def __init__(self, config: SnapshotsConfig, store: EventStore) -> None:
        self.config = config
        self.store = store
        self.failed = 0
        """Snapshots that could not be written (a full disk)."""
        self.written = 0
        self._closed = threading.Event()
        self._jobs: BoundedQueue[Job] = BoundedQueue("snapshots", QUEUE, OverflowPolicy.DROP_OLDEST, self._closed)
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Snapshots lost: dropped before the encoder (it could not keep up) or not written."""
        return sum(self._jobs.drops().values()) + self.failed

    def put(self, stream_id: str, event_id: str, best: Best) -> None:
        self._jobs.put(Job(stream_id, event_id, best))

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._closed.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        while True:
            job = self._jobs.get(timeout=1.0)  # after close: what is left, then None
            if job is None:
                if self._closed.is_set():
                    return
                continue
            stream_id, event_id, best = job.stream_id, job.event_id, job.best
            try:
                full, crop = render(best.image, best, self.config)
                name, path = self.store.file(stream_id, event_id, ".jpg")
                crop_name, crop_path = self.store.file(stream_id, event_id, ".crop.jpg")
                write_whole(path, full)
                write_whole(crop_path, crop)
                self.store.attach_snapshot(event_id, name, crop_name)
                self.written += 1
            except Exception as exc:  # a full disk: this snapshot is lost, counted, and the next one is tried
                self.failed += 1
                log.warning("snapshot of event %s not written: %s", event_id, exc)


class Snapshots:
    """Follows each event's object through the published frames and hands its best view to the writer: at once
    for an instantaneous event (the frame of the crossing), and for a lasting one when it starts and again,
    if a better view came, at each update and at its end."""

    def __init__(self, writer: SnapshotWriter, picture: Callable[[Published], np.ndarray]) -> None:
        """``picture``: the published frame as it may leave the box (redacted), BGR."""
        self.writer = writer
        self.picture = picture
        self.open: dict[str, tuple[int, Best]] = {}
        """Lasting events by id: their track and best view."""

    def on_result(self, published: Published) -> None:
        if not published.events and not self.open:
            return
        rows = self._rows(published)
        for event in published.events:
            if event.type == "new":
                best = self._view(published, event, rows)
                self.writer.put(event.stream_id, event.event_id, best)
                best.written = True
                if event.kind in LASTING:
                    self.open[event.event_id] = (event.track_id, best)
        for event_id, (track, best) in list(self.open.items()):
            row = rows.get(track)
            boxes = published.result.boxes
            if row is not None and float(boxes[row, 4]) >= best.score + BETTER_BY:
                self.open[event_id] = (
                    track,
                    Best(self.picture(published).copy(), box_of(boxes[row]), float(boxes[row, 4]), best.label),
                )
        for event in published.events:
            if event.type != "new" and event.event_id in self.open:
                self._flush(event)

    def on_end(self, events: tuple[Event, ...]) -> None:
        for event in events:
            if event.event_id in self.open:
                self._flush(event)

    def _flush(self, event: Event) -> None:
        _, best = self.open[event.event_id]
        if not best.written:
            self.writer.put(event.stream_id, event.event_id, best)
            best.written = True
        if event.type == "end":
            del self.open[event.event_id]

    def _rows(self, published: Published) -> dict[int, int]:
        ids = published.track_ids
        return {} if ids is None else {int(t): i for i, t in enumerate(ids) if t >= 0}

    def _view(self, published: Published, event: Event, rows: dict[int, int]) -> Best:
        """The event's object in this frame (its box here when its track is in it, else the event's box)."""
        row = rows.get(event.track_id)
        boxes = published.result.boxes
        if row is not None:
            box, score = box_of(boxes[row]), float(boxes[row, 4])
        else:
            box, score = event.box, event.score
        return Best(self.picture(published).copy(), box, score, event.label)
