"""Pacing frames in time: a file source at its own frame rate (to stand in for a live camera), and a decoder's
bursts spread over the time their frames span."""

from __future__ import annotations

import threading
import time

from engines.base import FrameFormat
from pipeline.sources.base import RawFrame, Source, frame_format

MAX_LAG_S = 0.5
"""A frame due longer ago than this starts the schedule over from now."""
BURST_SHARE = 0.9
"""A held frame waits this share of its distance in time from the previous one: a spacer never falls behind."""
BURST_MAX_GAP_S = 0.1
"""The longest a held frame waits after the previous one (a timestamp jump, a loop, a slow camera)."""
CATCH_UP_S = 0.25
"""A frame this far behind the camera's clock is never held: the client is working through a backlog (after a
stall, or start-up), which spacing at a share of the frame rate would only stretch over many seconds."""
CLOCK_DRIFT = 0.01
"""How fast the estimate of the camera's clock may move later, in seconds a second: a camera whose frames come
later for good (its clock, the network's delay) is on time again after a while."""
TIMESTAMP_JUMP_MS = 10_000.0
"""A timestamp this far from the previous frame's (or going back more than a second) starts the clock over."""


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


class BurstSpacer:
    """Spreads the frames that a decoder hands back together over the time they span.

    A decoder that reorders (a stream with B-frames) gives back, after some
    packets, two or three frames at once: the last B-frame and the P-frame
    decoded before it. A live camera's capture queue holds one frame, so only
    the last of such a burst would reach the model. ``release`` holds a frame
    of a burst (every frame but the first of one decoder call), and the frame
    right after a burst, until :data:`BURST_SHARE` of its timestamp distance
    has passed since the previous frame's release, at most
    :data:`BURST_MAX_GAP_S`: a held frame leaves later than it came, so the
    next call's frame would otherwise follow it closely. Other frames that come
    one at a time, late or not (a network stall catching up), are never held:
    the newest of those is the one to keep. Nor is any frame that comes more
    than :data:`CATCH_UP_S` behind the camera's clock (its timestamps set
    against the earliest any frame came): a backlog goes through at once and
    the capture queue keeps its newest frame, instead of spacing the backlog's
    bursts at nine tenths of their time, which took seconds to catch up.
    """

    def __init__(self, interrupted: threading.Event) -> None:
        """``interrupted``: the source's interrupt, which ends a wait at once."""
        self._interrupted = interrupted
        self._released: float | None = None
        self._pts_ms = 0.0
        self._after_burst = False
        self._clock: float | None = None
        """The earliest a frame came against its timestamp (``monotonic - pts``), drifting later by
        :data:`CLOCK_DRIFT`: where the camera's clock stands on ours."""
        self._seen = 0.0
        self.held = 0
        """How many frames have waited."""

    def release(self, pts_ms: float, burst: bool) -> None:
        """Return when the frame stamped ``pts_ms`` may go (at once unless ``burst`` or just after one, and early)."""
        now = time.monotonic()
        behind = self._behind(now, pts_ms)
        if (burst or self._after_burst) and self._released is not None and behind < CATCH_UP_S:
            gap = min(max(pts_ms - self._pts_ms, 0.0) / 1000.0, BURST_MAX_GAP_S)
            due = self._released + BURST_SHARE * gap
            if due > now:
                self.held += 1
                self._interrupted.wait(due - now)
                now = time.monotonic()
        self._released, self._pts_ms, self._after_burst = now, pts_ms, burst

    def reset(self) -> None:
        """Forget the previous frame (a new connection)."""
        self._released, self._after_burst, self._clock = None, False, None

    def _behind(self, now: float, pts_ms: float) -> float:
        """How late the frame stamped ``pts_ms`` comes, in seconds, against the camera's clock (updated by it)."""
        offset = now - pts_ms / 1000.0
        jump = pts_ms - self._pts_ms
        if self._clock is None or jump > TIMESTAMP_JUMP_MS or jump < -1000.0:
            self._clock = offset
        else:
            self._clock = min(self._clock + CLOCK_DRIFT * (now - self._seen), offset)
        self._seen = now
        return offset - self._clock
