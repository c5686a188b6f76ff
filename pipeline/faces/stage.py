"""The face thread: face detection at its own rate (or on person crops) and recognition per track.

The publish stage offers it every n-th frame of a stream through a one-deep,
drop-oldest queue per pipeline, so a slow face model skips frames instead of
holding back the main model. What it finds comes back to the publish stage
(the only thread that owns the ZeroMQ socket) as :class:`FaceResult`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from engines.base import DetectionEngine
from pipeline.analytics.events import Event, Observation
from pipeline.analytics.tracking import StreamTracker
from pipeline.config import FacesConfig, TrackingConfig
from pipeline.errors import ConfigError
from pipeline.faces.embedder import FaceEmbedder, load_embedder
from pipeline.faces.gallery import FaceGallery, Matcher, gallery_path
from pipeline.faces.identities import TrackFace, TrackIdentities
from pipeline.faces.messages import FaceJob, FaceResult
from pipeline.messages import FrameResult
from pipeline.queues import BoundedQueue
from pipeline.stages import FailureHandler
from pipeline.stages.base import Observe, QueueStage

log = logging.getLogger(__name__)

FACE = "face"
PERSON = "person"
PERSON_MARGIN = 0.1
"""Person crops are grown by this share of their size on each side before face detection."""


class FaceStage(QueueStage[FaceJob, FaceResult]):
    """Detects faces (unless the main model does) and recognizes them, on the frames it is offered."""

    def __init__(
        self,
        inp: BoundedQueue[FaceJob],
        out: BoundedQueue[FaceResult],
        config: FacesConfig,
        stop: threading.Event,
        on_failure: FailureHandler,
        detector: Callable[[], DetectionEngine] | None = None,
        recognizer: Callable[[], tuple[FaceEmbedder, Matcher]] | None = None,
        observe: Observe | None = None,
    ) -> None:
        super().__init__("faces", inp, out, None, stop, on_failure, observe)
        self.jobs = inp
        self.results = out
        self.config = config
        self._load_detector = detector
        self._load_recognizer = recognizer
        self.detector: DetectionEngine | None = None
        self.embedder: FaceEmbedder | None = None
        self.matcher: Matcher | None = None
        self._trackers: dict[str, StreamTracker] = {}
        self._identities: dict[str, TrackIdentities] = {}

    def settled(self) -> bool:
        """No job waiting or running (the publish stage drains the results before a stream's end)."""
        return not self.busy and len(self.jobs) == 0

    def load(self) -> None:
        """Load the face detector and the recognizer (called by the pipeline at start-up, before frames flow)."""
        if self._load_detector is not None:
            self.detector = self._load_detector()
            self.detector.warmup()
        if self._load_recognizer is not None:
            self.embedder, self.matcher = self._load_recognizer()

    def process(self, job: FaceJob) -> FaceResult:
        started = time.perf_counter()
        faces, track_ids = self._faces(job)
        who: list[TrackFace | None] = [None] * len(faces)
        events: list[Event] = []
        if self.embedder is not None and self.matcher is not None and len(faces):
            who, events = self._recognize(faces, track_ids)
        return FaceResult(
            faces,
            track_ids,
            tuple(who),
            tuple(events),
            self.detector is not None,
            (time.perf_counter() - started) * 1000.0,
        )

    # -- detection -----------------------------------------------------------------------------------------
    def _faces(self, job: FaceJob) -> tuple[FrameResult, np.ndarray]:
        result = job.result
        if self.detector is None:  # the main model finds faces
            keep = np.array([result.labels.get(int(c)) == FACE for c in result.boxes[:, 5]], dtype=bool)
            return result.subset(keep), job.track_ids[keep]
        image = result.frame.host_image()
        if self.config.search == "persons":
            return self._on_persons(job, image)
        rows = self.detector.infer([self.detector.prepare(image)], [image.shape[:2]])[0]
        faces = FrameResult.from_rows(result.frame, rows, {0: FACE})
        sid = result.stream_id
        tracker = self._trackers.get(sid)
        if tracker is None:
            tracker = self._trackers[sid] = StreamTracker(TrackingConfig(tracker="bytetrack"), self.config.conf)
        return faces, tracker.update(faces.boxes, image.shape[:2])

    def _on_persons(self, job: FaceJob, image: np.ndarray) -> tuple[FrameResult, np.ndarray]:
        """The most confident face inside each tracked person's box; it takes the person's track id."""
        assert self.detector is not None
        result = job.result
        h, w = image.shape[:2]
        rows_out: list[np.ndarray] = []
        ids: list[int] = []
        for row, track in zip(result.boxes, job.track_ids.tolist(), strict=True):
            if result.labels.get(int(row[5])) != PERSON or track < 0:
                continue
            x1, y1, x2, y2 = row[:4]
            mx, my = (x2 - x1) * PERSON_MARGIN, (y2 - y1) * PERSON_MARGIN
            cx1, cy1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
            cx2, cy2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
            if cx2 - cx1 < 16 or cy2 - cy1 < 16:
                continue
            crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
            found = np.array(self.detector.infer([self.detector.prepare(crop)], [crop.shape[:2]])[0], np.float32)
            if not len(found):
                continue
            found[:, [0, 2]] += cx1  # to frame pixels
            found[:, [1, 3]] += cy1
            found[:, 6::2] += cx1  # landmarks, x then y
            found[:, 7::2] += cy1
            # Only a face centred inside the person's box is theirs (the margin shows neighbours in a crowd) …
            across, down = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
            found = found[(across >= x1) & (across <= x2) & (down >= y1) & (down <= y2)]
            if not len(found):
                continue
            # … and of those, the confident one nearest the middle across.
            offset = np.abs((found[:, 0] + found[:, 2]) / 2 - (x1 + x2) / 2) / max(float(x2 - x1), 1.0)
            best = found[int(np.argmax(found[:, 4] * (1.0 - np.minimum(offset, 1.0))))].copy()
            best[[0, 2]] = np.clip(best[[0, 2]], x1, x2)  # a face is part of its person
            best[[1, 3]] = np.clip(best[[1, 3]], y1, y2)
            best[5] = 0
            rows_out.append(best)
            ids.append(track)
        rows = np.stack(rows_out) if rows_out else np.zeros((0, 6), np.float32)
        return FrameResult.from_rows(result.frame, rows, {0: FACE}), np.asarray(ids, np.int64)

    # -- recognition ---------------------------------------------------------------------------------------
    def _recognize(self, faces: FrameResult, track_ids: np.ndarray) -> tuple[list[TrackFace | None], list[Event]]:
        assert self.embedder is not None and self.matcher is not None
        sid = faces.stream_id
        tracks = self._identities.get(sid)
        if tracks is None:
            tracks = self._identities[sid] = TrackIdentities(sid, self.config.attempts)
        boxes = faces.boxes
        wanted = [
            i
            for i, t in enumerate(track_ids.tolist())
            if t >= 0 and boxes[i, 2] - boxes[i, 0] >= self.config.min_face_px and tracks.wants_embedding(t)
        ]
        events: list[Event] = []
        if wanted:
            rgb = cv2.cvtColor(faces.frame.host_image(), cv2.COLOR_BGR2RGB)
            matches = self.matcher.match(self.embedder.embed(rgb, boxes[wanted, :4]))
            frame = faces.frame
            for i, match in zip(wanted, matches, strict=True):
                x1, y1, x2, y2, conf, cls = (float(v) for v in boxes[i])
                obs = Observation(
                    int(track_ids[i]),
                    int(cls),
                    FACE,
                    conf,
                    (x1, y1, x2, y2),
                    frame.frame_index,
                    frame.pts_ms,
                    frame.captured_at,
                )
                event = tracks.update(int(track_ids[i]), match, obs)
                if event is not None:
                    events.append(event)
        tracks.forget_except({int(t) for t in track_ids})
        who = [None if t < 0 else _snapshot(tracks.face(int(t))) for t in track_ids.tolist()]
        return who, events

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()


def enrolled_gallery(configured: str | None) -> Path:
    """The gallery recognition reads (``faces.gallery`` or the default); :class:`ConfigError` when it is missing."""
    path = gallery_path(configured)
    if not path.is_file():
        raise ConfigError(f"face gallery not found: '{path}' (enroll people first: edgesight faces enroll)")
    return path


def load_recognizer(config: FacesConfig, device: str) -> tuple[FaceEmbedder, Matcher]:
    """The embedder ``faces.weights`` names and a snapshot of the gallery's embeddings made by it."""
    from engines.torch_backend import select_device

    path = enrolled_gallery(config.gallery)
    embedder = load_embedder(config.weights, str(select_device(device)))
    gallery = FaceGallery(path)
    try:
        matcher = Matcher.from_gallery(gallery, embedder.name, config.threshold)
    finally:
        gallery.close()
    log.info("faces: %d enrolled embeddings from %s (embedder %s)", len(matcher), path, embedder.name)
    return embedder, matcher


def _snapshot(face: TrackFace) -> TrackFace:
    return TrackFace(face.anon_id, face.identity, face.distance, face.attempts)
