"""Multi-object tracking per stream with Ultralytics' ByteTrack or BoT-SORT, used on their own.

Ultralytics' trackers are maintained with the detectors edgesight runs, need no
extra model, and take detections as plain arrays. The tracker sees boxes down
to :data:`TRACKER_LOW_CONF`; those under the model's threshold may only continue
a track. Every published detection (at or over the threshold) gets an id: it
either continues a track or starts one (a detection seen in a single frame
keeps an id nobody sees again).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.config import TrackingConfig

TRACKER_LOW_CONF = 0.1
"""Boxes down to this confidence may continue a track (ByteTrack's second association); none starts one."""
MAX_TRACKER_BOXES = 100
"""The most confident boxes a frame feeds the tracker: its cost grows with boxes × tracks, and a model that
sprays hundreds of faint boxes (untrained weights, noise) must not stall the publish thread."""


@dataclass(slots=True)
class _Seen:
    """Where a track was last seen, and how fast its box centre was moving (pixels per frame)."""

    frame: int
    box: np.ndarray
    class_id: int
    velocity: np.ndarray


class TrackStitcher:
    """Joins a new track to the track it continues, when the tracker lost an object and gave it a new id.

    A slow walker hidden for a few frames by another object often comes back
    too far from its track's prediction for the tracker to re-attach it. A new
    id that starts where a recently lost track of the same class would be by
    now (its last box moved on at its last speed: centre within half a box
    height, similar height) takes that track's id instead.

    An id is carried by one tracker track at a time, and a stitch hands it over
    for good. The tracker keeps a lost track for ``track_buffer`` frames and
    may find it again: if its id has gone to another track since, it gets a
    new id. So no id is ever on two boxes of a frame, nor passed back and forth
    between two tracks.
    """

    def __init__(self, max_gap: int, new_id: Callable[[], int]) -> None:
        """``new_id`` gives ids the tracker never hands out (for a track whose own id is taken)."""
        self.max_gap = max_gap
        self._new_id = new_id
        self._seen: dict[int, _Seen] = {}
        self._alias: dict[int, int] = {}
        """Tracker id → the id it was last given."""
        self._owner: dict[int, int] = {}
        """Every id given → the tracker id carrying it now."""
        self._raw_frame: dict[int, int] = {}
        """Tracker id → the frame it was last in (ids the tracker has long let go of are forgotten)."""
        self._frame = 0

    def __call__(self, ids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self._frame += 1
        out = ids.copy()
        raws = ids.tolist()
        fresh = [i for i, raw in enumerate(raws) if raw >= 0 and raw not in self._alias]
        for raw in raws:
            if raw in self._alias and self._owner[self._alias[raw]] != raw:  # found again, its id taken meanwhile
                self._give(raw, self._new_id())
        if fresh:
            visible = {self._alias[raw] for raw in raws if raw in self._alias}
            for i, track in zip(fresh, self._continued(boxes[fresh], visible), strict=True):
                self._give(raws[i], track if track is not None else self._unused(raws[i]))
        for i, raw in enumerate(raws):
            if raw >= 0:
                out[i] = self._alias[raw]
                self._remember(int(out[i]), boxes[i])
                self._raw_frame[raw] = self._frame
        self._forget()
        return out

    def _forget(self) -> None:
        """Drop what can no longer matter, so that memory stays flat on a run of months.

        A lost id is not stitched to after ``max_gap`` frames; the tracker drops
        a lost track after ``track_buffer`` (= ``max_gap``) frames, so a tracker id
        unseen for twice that never comes back. Ids are never given twice either
        way: new tracks take fresh numbers from the tracker's own sequence.
        """
        for t in [t for t, seen in self._seen.items() if self._frame - seen.frame > self.max_gap]:
            del self._seen[t]
        for raw in [r for r, last in self._raw_frame.items() if self._frame - last > 2 * self.max_gap]:
            del self._raw_frame[raw]
            track = self._alias.pop(raw)
            if self._owner.get(track) == raw:
                del self._owner[track]

    def _unused(self, raw: int) -> int:
        """The id of a new track that continues none: its tracker id, unless that was ever given (then a new one)."""
        return raw if raw not in self._owner else self._new_id()

    def _give(self, raw: int, track: int) -> None:
        self._alias[raw] = track
        self._owner[track] = raw

    def _continued(self, boxes: np.ndarray, visible: set[int]) -> list[int | None]:
        """For each new track's box, the lost track it continues, if any (each lost track at most once)."""
        if not self._seen:
            return [None] * len(boxes)
        tracks = np.fromiter(self._seen.keys(), dtype=np.int64, count=len(self._seen))
        seen = list(self._seen.values())
        gap = self._frame - np.array([s.frame for s in seen])
        last = np.stack([s.box for s in seen])
        classes = np.array([s.class_id for s in seen])
        velocity = np.stack([s.velocity for s in seen])
        last_height = np.maximum(last[:, 3] - last[:, 1], 1e-6)
        predicted = (last[:, :2] + last[:, 2:4]) / 2.0 + velocity * gap[:, None]
        free = (gap > 0) & (gap <= self.max_gap) & ~np.isin(tracks, list(visible))
        out: list[int | None] = []
        for box in boxes:
            centre, height = (box[:2] + box[2:4]) / 2.0, float(box[3] - box[1])
            distance = np.hypot(*(predicted - centre).T)
            ratio = height / last_height
            ok = free & (classes == int(box[5])) & (ratio >= 0.6) & (ratio <= 1.6)
            ok &= distance < 0.5 * np.maximum(height, last_height)
            if not ok.any():
                out.append(None)
                continue
            best = int(np.argmin(np.where(ok, distance, np.inf)))
            free[best] = False
            out.append(int(tracks[best]))
        return out

    def _remember(self, track: int, box: np.ndarray) -> None:
        previous = self._seen.get(track)
        centre = (box[:2] + box[2:4]) / 2.0
        velocity = np.zeros(2)
        if previous is not None:
            step = (centre - (previous.box[:2] + previous.box[2:4]) / 2.0) / max(1, self._frame - previous.frame)
            velocity = 0.7 * previous.velocity + 0.3 * step
        self._seen[track] = _Seen(self._frame, box[:4].astype(np.float64), int(box[5]), velocity)


class StreamTracker:
    """One stream's tracker: ``update`` takes a frame's ``(N, 6)`` detections and returns their track ids."""

    def __init__(self, config: TrackingConfig, conf: float) -> None:
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker

        threshold = max(conf, 1e-3)
        args = SimpleNamespace(
            tracker_type=config.tracker,
            track_high_thresh=threshold,
            track_low_thresh=min(TRACKER_LOW_CONF, threshold),
            new_track_thresh=max(threshold, config.new_track_conf or 0.0),
            track_buffer=config.track_buffer,
            match_thresh=config.match_thresh,
            fuse_score=True,
            gmc_method="none",  # a fixed camera: no global motion compensation
            proximity_thresh=0.5,
            appearance_thresh=0.25,
            with_reid=False,
            model="auto",
        )
        self._tracker: Any = BOTSORT(args) if config.tracker == "botsort" else BYTETracker(args)
        self._threshold = threshold
        self._spare_ids = itertools.count(1 << 31)
        self._stitch = TrackStitcher(config.track_buffer, self._new_id) if config.stitch else None

    def update(self, boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Track ids (int64) for the rows of ``boxes`` (``x1, y1, x2, y2, confidence, class_id``)."""
        from ultralytics.engine.results import Boxes

        ids = np.full(len(boxes), -1, dtype=np.int64)
        rows = np.arange(len(boxes))
        if len(boxes) > MAX_TRACKER_BOXES:
            rows = np.sort(np.argsort(-boxes[:, 4], kind="stable")[:MAX_TRACKER_BOXES])
        tracker = self._tracker
        tracker.update(Boxes(np.asarray(boxes[rows], dtype=np.float32), shape))
        for track in tracker.tracked_stracks:  # confirmed tracks and the ones this frame started
            if track.frame_id == tracker.frame_id and 0 <= track.idx < len(rows):
                ids[int(rows[track.idx])] = int(track.track_id)
        # A detection the tracker dropped (in a crowd, a new track that duplicates a lost one) still gets an
        # id, from the tracker's own sequence so that it never collides: one nobody will see again.
        orphans = np.flatnonzero((ids < 0) & (boxes[:, 4] >= self._threshold))
        for i in orphans:
            ids[i] = self._new_id()
        return self._stitch(ids, boxes) if self._stitch is not None else ids

    def _new_id(self) -> int:
        source = getattr(self._tracker, "_ids", None)  # BYTETracker's id sequence (Ultralytics 8.4)
        return int(next(source)) if source is not None else next(self._spare_ids)
