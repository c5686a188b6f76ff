"""Zones: entering, leaving, staying (loitering) and occupancy per class."""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.analytics.events import Event, Observation, OpenEvent, instant
from pipeline.analytics.geometry import inside, to_pixels
from pipeline.config import ZoneConfig


class ZoneMonitor:
    """One zone of one stream. An object is inside while its anchor (bottom-centre) is in the polygon.

    A change counts once it has lasted ``confirm_frames`` frames in a row, and
    dates from its first frame. A track first seen inside enters. It exits when
    its anchor leaves, or when its track ends while inside (at its last
    observation). Dwell runs from the entering observation to the exiting one.
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

    def _poly(self, width: int, height: int) -> np.ndarray:
        if self._polygon is None:
            self._polygon = to_pixels(self.config.points, self.config.normalized, width, height)
        return self._polygon

    @property
    def occupancy(self) -> Counter[str]:
        return Counter(obs.label for obs in self._entered_at.values())

    def update(self, obs: Observation, anchor: np.ndarray, size: tuple[int, int]) -> list[Event]:
        if not self.config.wants(obs.label, obs.class_id, obs.score):
            return []
        now_inside = inside(self._poly(*size), anchor)
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
            self._entered_at[obs.track_id] = first
            self.entered[first.label] += 1
            return [instant("zone_enter", self.stream_id, first, zone=self.config.name)]
        return self._exit(obs.track_id, first)

    def end_track(self, track_id: int, last: Observation) -> list[Event]:
        """The track is gone; if it was inside, it exits at its last observation."""
        self._streaks.pop(track_id, None)
        return self._exit(track_id, last) if track_id in self._entered_at else []

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
                extra={"dwell_frames": frames},
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
