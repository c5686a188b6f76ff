"""Supervision of live sources: reconnect with exponential backoff and jitter, and report the source's state.

A camera or RTSP stream that fails to open, stops delivering frames or stalls
past ``reconnect.idle_timeout_s`` is released and opened again, after waits
that double from ``base_s`` up to ``cap_s`` (each spread by ±``jitter``).
The liveness clock only runs while the capture thread waits on the source: a
capture thread held up by a full queue (a slow consumer) is never taken for a
stalled camera. A server's refusal (``PermanentSourceError``: 401, 403, 404)
ends the stream only when it answers the stream's very first attempt; later
(a camera that was there, or was unreachable at first, may say so while it
reboots) it is retried like any other failure. States — ``connecting``,
``online``, ``reconnecting``, ``offline`` (down longer than
``offline_after_s``, still retried) — are handed to ``on_state``, which
publishes them as ``status.<stream_id>`` and logs them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from engines.base import FrameFormat
from pipeline.config import ReconnectConfig
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources.base import RawFrame, Source, frame_format
from pipeline.status import StreamStatus

log = logging.getLogger(__name__)

SourceState = StreamStatus
"""One of the supervision states: connecting, online, reconnecting, offline."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """A live source's new state (a typed message for the publish stage's status queue)."""

    stream_id: str
    state: SourceState
    at: float
    attempt: int = 0
    """Failed attempts since the source was last online."""
    retry_in_s: float | None = None
    reason: str | None = None


class Backoff:
    """Exponential backoff with jitter: ``base * 2**n`` capped at ``cap``, each spread by ±``jitter``."""

    def __init__(self, base_s: float, cap_s: float, jitter: float, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s, self.jitter = base_s, cap_s, jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * (2.0**self.failures))
        self.failures += 1
        return max(0.0, delay * (1.0 + self.jitter * self._rng.uniform(-1.0, 1.0)))

    def reset(self) -> None:
        self.failures = 0


class SupervisedSource:
    """A live source that reconnects: ``read`` returns the next frame whatever it takes, until interrupted.

    Implements :class:`~pipeline.sources.base.Source`. ``open`` only reports ``connecting``; the first attempt
    is made by :meth:`connect_early` (in a thread of its own, while the model loads, so the camera's frame
    format is known for the warm-up) or else by the capture thread's first ``read``: an unreachable camera at
    start-up holds back nobody and is retried;
    ``read`` returns ``None`` only once interrupted, and raises
    :class:`SourceError` only after ``max_attempts`` failed attempts in a row, or
    :class:`PermanentSourceError` when the very first attempt gets one (a wrong path or password at start-up).
    """

    live = True

    def __init__(
        self,
        stream_id: str,
        factory: Callable[[], Source],
        config: ReconnectConfig,
        on_state: Callable[[StateChange], None],
        rng: random.Random | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._factory = factory
        self.config = config
        self._on_state = on_state
        self._backoff = Backoff(config.base_s, config.cap_s, config.jitter, rng)
        self._source: Source | None = None
        self._opening: Source | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.state: SourceState | None = None
        probe = factory()  # not opened: its name and kind
        self.description = probe.description
        self.keeps_latest: bool = getattr(probe, "keeps_latest", False)
        """Its source keeps its latest frame until read (see :class:`~pipeline.sources.hosted.HostedSource`)."""
        self.reconnects = 0
        self._down_since: float | None = None
        self._last_ms = 0.0
        self._offset_ms = 0.0
        self._retry_at = 0.0
        self._first_attempt = True
        self._early: threading.Thread | None = None
        self._early_error: SourceError | None = None

    # -- the Source protocol -----------------------------------------------------------------------------
    def open(self) -> None:
        """Report ``connecting``; the first attempt is made by :meth:`connect_early` or the first ``read``."""
        self._set_state(StreamStatus.CONNECTING)

    @property
    def frame_format(self) -> FrameFormat | None:
        """The camera's frame format: once it has connected, or sooner where its source knows it while it
        connects (an NVDEC camera, from its stream's description); ``None`` until then."""
        with self._lock:
            return frame_format(self._source if self._source is not None else self._opening)

    def connect_early(self) -> None:
        """Make the first connection attempt now, in a thread of its own; the first ``read`` waits for it and
        raises what it raised (a wrong password at start-up)."""
        self._early = threading.Thread(target=self._connect_first, name=f"connect-{self.stream_id}", daemon=True)
        self._early.start()

    @property
    def connecting(self) -> bool:
        """The first attempt :meth:`connect_early` started is still under way."""
        return self._early is not None and self._early.is_alive()

    def wait_connected(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the attempt :meth:`connect_early` started."""
        if self._early is not None:
            self._early.join(max(0.0, timeout))

    def read(self) -> RawFrame | None:
        if self._early is not None:
            self._early.join()
            self._early, error, self._early_error = None, self._early_error, None
            if error is not None:
                raise error
        while not self._stop.is_set():
            if self._source is None:
                self._wait_and_connect()
                continue
            frame = self._read_once()
            if frame is not None:
                return frame
        return None

    def release(self) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            source.release()

    def interrupt(self) -> None:
        self._stop.set()
        with self._lock:
            source = self._source
        if source is not None:
            source.interrupt()

    # -- internals ---------------------------------------------------------------------------------------
    def _read_once(self) -> RawFrame | None:
        assert self._source is not None
        started = time.monotonic()
        try:
            frame = self._source.read()
            reason = None if frame is not None else "the stream ended"
        except SourceError as exc:
            frame, reason = None, str(exc)
        if frame is not None and time.monotonic() - started > self.config.idle_timeout_s:
            frame, reason = None, f"no frame for {self.config.idle_timeout_s:g} s"  # came back, but too late
        if frame is None:
            if not self._stop.is_set():
                self._lost(reason or "lost")
            return None
        if self.state != StreamStatus.ONLINE:
            self._backoff.reset()
            self._down_since = None
            self._set_state(StreamStatus.ONLINE)
        pts = frame.pts_ms + self._offset_ms
        if pts <= self._last_ms:  # a reconnected stream starts its clock again
            self._offset_ms += self._last_ms - pts + 1.0
            pts = self._last_ms + 1.0
        self._last_ms = pts
        return replace(frame, pts_ms=pts)

    def _connect(self) -> bool:
        source = self._factory()
        first, self._first_attempt = self._first_attempt, False
        with self._lock:
            self._opening = source
        try:
            source.open()
        except SourceError as exc:
            with self._lock:
                self._opening = None
            source.release()
            if first and isinstance(exc, PermanentSourceError):
                raise  # the server's first answer: no such stream, or not for us; retrying will not help
            self._lost(str(exc))  # after that, a camera that says so may be rebooting: retried
            return False
        with self._lock:
            self._opening = None
            if not self._stop.is_set():
                self._source = source
                return True
        source.release()  # stopped while it connected
        return False

    def _connect_first(self) -> None:
        try:
            self._connect()
        except SourceError as exc:  # handed to the capture thread's first read, which reports it
            self._early_error = exc

    def _lost(self, reason: str) -> None:
        self.release()
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        if self.state == StreamStatus.ONLINE:
            self.reconnects += 1
        attempts = self._backoff.failures + 1
        if self.config.max_attempts is not None and attempts > self.config.max_attempts:
            raise SourceError(f"{self.description}: gave up after {self.config.max_attempts} attempts ({reason})")
        delay = self._backoff.next_delay()
        down_for = now - self._down_since
        state = StreamStatus.OFFLINE if down_for >= self.config.offline_after_s else StreamStatus.RECONNECTING
        self._set_state(state, attempt=attempts, retry_in_s=round(delay, 3), reason=reason, force=True)
        self._retry_at = now + delay

    def _wait_and_connect(self) -> None:
        delay = max(0.0, self._retry_at - time.monotonic())
        if self._stop.wait(delay):
            return
        self._connect()

    def _set_state(
        self,
        state: SourceState,
        *,
        attempt: int = 0,
        retry_in_s: float | None = None,
        reason: str | None = None,
        force: bool = False,
    ) -> None:
        if state == self.state and not force:
            return
        changed = state != self.state
        self.state = state
        if changed or state == StreamStatus.OFFLINE:
            level = logging.INFO if state in (StreamStatus.CONNECTING, StreamStatus.ONLINE) else logging.WARNING
            detail = f" (attempt {attempt}, retry in {retry_in_s:g} s: {reason})" if reason else ""
            log.log(level, "stream '%s': %s%s", self.stream_id, state, detail)
        if changed:
            self._on_state(StateChange(self.stream_id, state, time.time(), attempt, retry_in_s, reason))
