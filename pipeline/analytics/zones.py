"""Zones: entering, leaving, staying (loitering) and occupancy per class."""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.analytics.events import Event, Observation, OpenEvent, instant
from pipeline.analytics.geometry import anchors, inside, iou, to_pixels
from pipeline.config import ZoneConfig

DUPLICATE_IOU = 0.4
"""A new track whose box overlaps a visitor's this much, in the same frame, is that visitor seen twice."""


class ZoneMonitor:
    """One zone of one stream. An object is inside while its anchor (bottom-centre) is in the polygon.

    A change counts once it has lasted ``confirm_frames`` frames in a row, and
    dates from its first frame. A track first seen inside enters. It exits when
    its anchor leaves, or when its track ends while inside (at its last
    observation). Dwell runs from the entering observation to the exiting one.

    A visit outlives the track id that began it. A track about to enter near
    where a visitor of its class was last seen while that visitor is lost (the
    tracker gave the object a new id after an occlusion), or on top of a
    visible visitor (the detector saw it twice), follows that visitor instead
    of entering. A follower takes the visit over once its visitor has
    been missing for two frames in a row, or when its visitor's track ends
    inside; followers of a visitor that leaves are done with the zone. Which
    visitors are in view comes from :meth:`begin_frame`, once per frame,
    before its observations.
    """

    def __init__(self, config: ZoneConfig, stream_id: str, update_interval_s: float) -> None:
        self.config = config
        self.stream_id = stream_id
        self.update_interval_ms = update_interval_s * 1000.0
        self._polygon: np.ndarray | None = None
        self._entered_at: dict[int, Observation] = {}
        self._loiter: dict[int, OpenEvent] = {}
        self._streaks: dict[int, tuple[int, Observation]] = {}
        """Per track: for how many frames, since which observation, it has been on the other side of the border."""
        self.entered: Counter[str] = Counter()
        self.exited: Counter[str] = Counter()
        self.dwell_frames: dict[int, list[int]] = {}
        """Per track, the dwell (frames) of each completed visit."""
        self._last: dict[int, Observation] = {}
        self._followers: dict[int, int] = {}
        """Follower track → the visitor whose visit it continues or duplicates."""
        self._retired: set[int] = set()
        """Tracks done with this zone (a visit they followed has ended, or was taken over from them)."""
        self._missing: dict[int, int] = {}
        """Per visitor: frames in a row it has not been in view."""

    def begin_frame(self, visible: set[int]) -> None:
        """The track ids in view in the frame whose observations follow."""
        for visitor in self._entered_at:
            self._missing[visitor] = 0 if visitor in visible else self._missing.get(visitor, 0) + 1

    def _poly(self, width: int, height: int) -> np.ndarray:
        if self._polygon is None:
            self._polygon = to_pixels(self.config.points, self.config.normalized, width, height)
        return self._polygon

    @property
    def occupancy(self) -> Counter[str]:
        return Counter(obs.label for obs in self._entered_at.values())

    def update(self, obs: Observation, anchor: np.ndarray, size: tuple[int, int]) -> list[Event]:
        if not self.config.wants(obs.label, obs.class_id, obs.score) or obs.track_id in self._retired:
            return []
        self._last[obs.track_id] = obs
        now_inside = inside(self._poly(*size), anchor)
        leader = self._followers.get(obs.track_id)
        if leader is not None:
            if self._missing.get(leader, 0) < 2:
                return []  # the visitor is (all but) in view: its visit covers this track
            self._take_over(leader, obs.track_id)
            self._retired.add(leader)  # it may come back into view: the follower's visit is its own now
        entry = self._entered_at.get(obs.track_id)
        if now_inside == (entry is not None):
            self._streaks.pop(obs.track_id, None)
            return self._loitering(obs, entry) if entry is not None else []
        count, first = self._streaks.get(obs.track_id, (0, obs))
        count += 1
        if count < self.config.confirm_frames:
            self._streaks[obs.track_id] = (count, first)
            return self._loitering(obs, entry) if entry is not None else []
        self._streaks.pop(obs.track_id, None)
        if now_inside:  # entered at the first frame of the streak
            leader = self._leader_for(obs) if self.config.continue_visits else None
            if leader is not None:
                self._followers[obs.track_id] = leader
                return []
            self._entered_at[obs.track_id] = first
            self.entered[first.label] += 1
            return [instant("zone_enter", self.stream_id, first, zone=self.config.name)]
        return self._exit(obs.track_id, first)

    def end_track(self, track_id: int, last: Observation) -> list[Event]:
        """The track is gone; if it was inside, its visit goes on with a follower seen since, or exits at its last
        observation."""
        self._streaks.pop(track_id, None)
        self._last.pop(track_id, None)
        self._retired.discard(track_id)
        if self._followers.pop(track_id, None) is not None or track_id not in self._entered_at:
            return []
        heirs = [
            f
            for f, leader in self._followers.items()
            if leader == track_id and self._last[f].frame_index > last.frame_index
        ]
        if heirs:
            self._take_over(track_id, max(heirs, key=lambda f: self._last[f].frame_index))
            return []
        return self._exit(track_id, last)

    def _leader_for(self, obs: Observation) -> int | None:
        """The visitor an entering track continues (a lost one, last seen within one box height of it) or
        duplicates (a visible one it overlaps); ``None``: a new visit."""
        best: tuple[float, int] | None = None
        for visitor in self._entered_at:
            last = self._last.get(visitor)
            if visitor == obs.track_id or last is None or last.label != obs.label:
                continue
            if not self._missing.get(visitor, 0):  # in view (this frame's box, or last frame's if not yet seen)
                overlap = iou(last.box, obs.box)
                score = 1.0 - overlap if overlap >= DUPLICATE_IOU else None
            else:
                reach = max(obs.box[3] - obs.box[1], last.box[3] - last.box[1])
                here, there = anchors(np.array([obs.box, last.box]))
                distance = float(np.hypot(*(here - there)))
                score = distance / reach if distance <= reach else None
            if score is not None and (best is None or score < best[0]):
                best = (score, visitor)
        return None if best is None else best[1]

    def _take_over(self, visitor: int, follower: int) -> None:
        """``follower`` carries on ``visitor``'s visit (same entry, same loiter event); the rest follow it."""
        self._entered_at[follower] = self._entered_at.pop(visitor)
        self._missing[follower] = 0
        self._missing.pop(visitor, None)
        loiter = self._loiter.pop(visitor, None)
        if loiter is not None:
            self._loiter[follower] = loiter
        self._streaks.pop(visitor, None)
        del self._followers[follower]
        for other, leader in list(self._followers.items()):
            if leader == visitor:
                self._followers[other] = follower

    def _loitering(self, obs: Observation, entry: Observation) -> list[Event]:
        limit = self.config.loiter_s
        dwell_s = (obs.pts_ms - entry.pts_ms) / 1000.0
        if limit is None or dwell_s < limit:
            return []
        open_event = self._loiter.get(obs.track_id)
        if open_event is None:
            open_event = self._loiter[obs.track_id] = OpenEvent("loiter", self.stream_id, obs, zone=self.config.name)
            return [open_event.event("new", dwell_s)]
        open_event.observe(obs)
        if obs.pts_ms - open_event.last_sent_pts >= self.update_interval_ms:
            open_event.last_sent_pts = obs.pts_ms
            return [open_event.event("update", dwell_s)]
        return []

    def _exit(self, track_id: int, obs: Observation) -> list[Event]:
        entry = self._entered_at.pop(track_id)
        self._missing.pop(track_id, None)
        for follower in [f for f, leader in self._followers.items() if leader == track_id]:
            del self._followers[follower]
            self._retired.add(follower)
        self.exited[obs.label] += 1
        dwell_s = (obs.pts_ms - entry.pts_ms) / 1000.0
        frames = obs.frame_index - entry.frame_index
        self.dwell_frames.setdefault(track_id, []).append(frames)
        events = [
            instant(
                "zone_exit",
                self.stream_id,
                obs,
                zone=self.config.name,
                dwell_s=dwell_s,
                started_at=entry.at,
                extra={"dwell_frames": frames}
                if entry.track_id == track_id
                else {"dwell_frames": frames, "entry_track_id": entry.track_id},
            )
        ]
        loiter = self._loiter.pop(track_id, None)
        if loiter is not None:
            loiter.observe(obs)
            events.append(loiter.event("end", dwell_s))
        return events

    def to_json(self) -> dict[str, dict[str, int]]:
        return {
            "occupancy": dict(sorted(self.occupancy.items())),
            "entered": dict(sorted(self.entered.items())),
            "exited": dict(sorted(self.exited.items())),
        }
