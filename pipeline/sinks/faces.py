"""The face thread's side of publishing: frames offered to it, its faces published, what it knows kept for the
bus (identities of tracks) and for redaction (recent face boxes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.faces.messages import FaceJob, FaceResult
from pipeline.messages import FrameResult
from pipeline.queues import BoundedQueue
from pipeline.schema import FACES_TOPIC
from pipeline.sinks.base import Published, ResultSink, StreamEnding
from pipeline.sinks.bus import BusWriter

SETTLE_TIMEOUT_S = 30.0
"""At a stream's end, how long to wait for the face thread's last jobs before its final status."""


class FaceSink(ResultSink):
    """Offers every n-th published frame to the face thread and publishes what it finds.

    With a face detector of its own (``model`` set), faces go out on
    ``faces.<stream_id>``; when the main model finds the faces, what the
    thread recognises is kept per track and added to ``detections``
    (:meth:`annotations`).
    """

    name = "faces"

    def __init__(
        self,
        jobs: BoundedQueue[FaceJob],
        results: BoundedQueue[FaceResult],
        every_n_frames: int,
        settled: Callable[[], bool],
        model: str,
        writer: BusWriter,
    ) -> None:
        self.jobs = jobs
        self.results = results
        self.every_n_frames = every_n_frames
        self.settled = settled
        """True when the face thread holds no job."""
        self.model = model
        """The face detector's name, or ``""`` when the main model finds faces."""
        self.writer = writer
        self.seq: dict[str, int] = {}
        self.known: dict[str, dict[int, Any]] = {}
        """Per stream, track id → what the face thread knows of that track's face (main model finds faces)."""
        self.latest: dict[str, tuple[int, np.ndarray]] = {}
        """Per stream, the frame index and face boxes of the face thread's latest result."""

    def on_stream_added(self, stream_id: str) -> None:
        self.jobs.expect(stream_id)  # frames the face thread had no time for: counted from 0

    def on_result(self, published: Published) -> None:
        result = published.result
        if result.frame.frame_index % self.every_n_frames:
            return
        ids = published.track_ids if published.track_ids is not None else np.full(len(result), -1, np.int64)
        self.jobs.put(FaceJob(result, ids))

    def poll(self) -> None:
        while (found := self.results.get_nowait()) is not None:
            self._publish(found)

    def on_stream_end(self, ending: StreamEnding) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not self.settled() and time.monotonic() < deadline and not self.writer.stop.is_set():
            time.sleep(0.01)
        self.poll()

    def annotations(self, result: FrameResult, track_ids: np.ndarray | None) -> list[dict[str, Any]] | None:
        """Identity (or anonymous id) of the main model's face detections whose track the face thread knows."""
        known = self.known.get(result.stream_id)
        if not known or track_ids is None:
            return None
        return [known[t].annotation() if t in known else {} for t in track_ids.tolist()]

    def recent_boxes(self, result: FrameResult) -> np.ndarray | None:
        """The face thread's latest face boxes for this stream while still recent (for redaction)."""
        recent = self.latest.get(result.stream_id)
        if recent is None:
            return None
        frame_index, boxes = recent
        return boxes if result.frame.frame_index - frame_index <= 2 * self.every_n_frames else None

    def _publish(self, found: FaceResult) -> None:
        sid = found.stream_id
        self.latest[sid] = (found.faces.frame.frame_index, found.faces.boxes[:, :4].copy())
        if self.model:
            seq = self.seq.get(sid, 0)
            named = found.annotations() if any(w is not None for w in found.who) else None
            self.writer.detections(FACES_TOPIC, found.faces, seq, self.model, found.track_ids, named)
            self.seq[sid] = seq + 1
        else:
            known = self.known.setdefault(sid, {})
            for track, who in zip(found.track_ids.tolist(), found.who, strict=True):
                if who is not None:
                    known[track] = who
        for event in found.events:
            self.writer.event(event)
