"""Pacing a file source at its own frame rate, to stand in for a live camera."""

from __future__ import annotations

import threading
import time

from engines.base import FrameFormat
from pipeline.sources.base import RawFrame, Source, frame_format

MAX_LAG_S = 0.5
"""A frame due longer ago than this starts the schedule over from now."""


class PacedSource:
    """Wraps a source and releases each frame no earlier than its ``pts_ms`` after the first.

    A reader held up for longer than :data:`MAX_LAG_S` (start-up still
    loading the model while a decoding process waits on its full ring) does
    not get the frames it missed in a burst, faster than the file's rate: the
    schedule starts over, so the source goes on at its own rate, as a camera
    would.
    """

    def __init__(self, inner: Source) -> None:
        self._inner = inner
        self.description = inner.description
        self.live = True
        self._start: float | None = None
        self._first_pts = 0.0
        self._interrupted = threading.Event()

    def open(self) -> None:
        self._inner.open()

    @property
    def total_frames(self) -> int | None:
        return getattr(self._inner, "total_frames", None)

    @property
    def frame_format(self) -> FrameFormat | None:
        return frame_format(self._inner)

    def read(self) -> RawFrame | None:
        frame = self._inner.read()
        if frame is None:
            return None
        now = time.monotonic()
        if self._start is None:
            self._start, self._first_pts = now, frame.pts_ms
        due = self._start + (frame.pts_ms - self._first_pts) / 1000.0
        if now - due > MAX_LAG_S:
            self._start, self._first_pts = now, frame.pts_ms
        elif due > now:
            self._interrupted.wait(due - now)
        return frame

    def release(self) -> None:
        self._inner.release()

    def interrupt(self) -> None:
        self._interrupted.set()
        self._inner.interrupt()
