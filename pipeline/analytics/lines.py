"""Counting objects that cross a directed line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.analytics.geometry import crosses_segment, side, to_pixels
from pipeline.config import LineConfig

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Crossing:
    line: str
    track_id: int
    direction: Direction


@dataclass(slots=True)
class _Side:
    """A track's confirmed side of the line, and a change of side waiting for confirmation."""

    sign: bool
    """True: positive cross product."""
    anchor: np.ndarray
    """Its last anchor on the confirmed side."""
    pending: int = 0
    crossed_from: np.ndarray | None = None
    crossed_to: np.ndarray | None = None


class LineCounter:
    """One line: each track counts at most once per direction.

    A track's side is the sign of ``(p2 − p1) × (anchor − p1)``. It crosses when
    it has been on the other side for ``confirm_frames`` frames in a row and the
    step where the sign flipped passes through the segment (not the line beyond
    its ends). Negative → positive is ``in``.
    """

    def __init__(self, config: LineConfig) -> None:
        self.config = config
        self._pts: tuple[np.ndarray, np.ndarray] | None = None
        self._sides: dict[int, _Side] = {}
        self._counted: set[tuple[int, Direction]] = set()
        self.counts: dict[Direction, Counter[str]] = {"in": Counter(), "out": Counter()}

    def _points(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pts is None:
            p = to_pixels(self.config.points, self.config.normalized, width, height)
            self._pts = (p[0], p[1])
        return self._pts

    def update(
        self, track_id: int, label: str, class_id: int, confidence: float, anchor: np.ndarray, size: tuple[int, int]
    ) -> Crossing | None:
        """Feed one tracked anchor (``size`` is the frame's width, height); returns a new crossing, if any."""
        if not self.config.wants(label, class_id, confidence):
            return None
        p1, p2 = self._points(*size)
        s = side(p1, p2, anchor)
        if s == 0.0:
            return None  # on the line: wait until it is clearly on one side
        state = self._sides.get(track_id)
        if state is None:
            self._sides[track_id] = _Side(s > 0, anchor)
            return None
        if (s > 0) == state.sign:
            state.anchor, state.pending, state.crossed_from, state.crossed_to = anchor, 0, None, None
            return None
        if state.pending == 0:
            state.crossed_from, state.crossed_to = state.anchor, anchor
        state.pending += 1
        if state.pending < self.config.confirm_frames:
            return None
        crossed = crosses_segment(state.crossed_from, state.crossed_to, p1, p2)  # type: ignore[arg-type]
        self._sides[track_id] = _Side(s > 0, anchor)
        direction: Direction = "in" if s > 0 else "out"
        if not crossed or (track_id, direction) in self._counted:
            return None
        self._counted.add((track_id, direction))
        self.counts[direction][label] += 1
        return Crossing(self.config.name, track_id, direction)

    def forget(self, track_id: int) -> None:
        self._sides.pop(track_id, None)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {d: dict(sorted(c.items())) for d, c in self.counts.items()}
