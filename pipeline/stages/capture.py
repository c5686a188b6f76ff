"""The capture stage: one thread per stream reads its opened source into the stream's capture queue."""

from __future__ import annotations

import logging
import threading
import time

from pipeline.errors import PermanentSourceError, SourceError
from pipeline.messages import CaptureItem, EndOfStream, Frame
from pipeline.queues import BoundedQueue
from pipeline.sources import Source
from pipeline.stages.base import FailureHandler, Observe, StageThread

log = logging.getLogger(__name__)

WAIT_FOR_ROOM_S = 0.1
"""How long a capture thread waits for room in its queue before it looks at the stop flags again."""


class CaptureStage(StageThread):
    """Reads one opened source into its capture queue; sends :class:`EndOfStream` from ``finally``."""

    def __init__(
        self,
        stream_id: str,
        source: Source,
        out: BoundedQueue[CaptureItem],
        stop: threading.Event,
        on_failure: FailureHandler,
        max_frames: int | None = None,
        observe: Observe | None = None,
    ) -> None:
        super().__init__(f"capture-{stream_id}", stop, on_failure, observe)
        self.stream_id = stream_id
        self.source = source
        self.out = out
        self.max_frames = max_frames
        self.frames = 0
        self.removed = threading.Event()
        self.refused = False
        """The source refused for good before its first frame (a wrong path or password): bad input."""

    def loop(self) -> None:
        error: str | None = None
        keeps_latest = getattr(self.source, "keeps_latest", False)
        try:
            while (
                not self.stop_event.is_set()
                and not self.removed.is_set()
                and (self.max_frames is None or self.frames < self.max_frames)
            ):
                if keeps_latest and not self.out.wait_for_room(WAIT_FOR_ROOM_S):
                    continue  # a source that keeps its latest frame is read when that frame can be queued
                started = time.perf_counter()
                raw = self.source.read()
                self.clock.add(time.perf_counter() - started)
                if raw is None:
                    break
                if raw.skipped:
                    self.out.count_dropped(self.stream_id, raw.skipped)
                frame = Frame(self.stream_id, self.frames, raw.pts_ms, time.time(), raw.image, raw.layout)
                if not self.out.put(frame):
                    break
                self.frames += 1
        except SourceError as exc:
            error = str(exc)
            self.refused = isinstance(exc, PermanentSourceError)
        except Exception as exc:
            error = f"{self.source.description}: {type(exc).__name__}: {exc}"
            log.debug("capture of '%s' failed", self.stream_id, exc_info=True)
        finally:
            self.source.release()
            if error:
                log.error("stream '%s': %s", self.stream_id, error)
            stopped = self.stop_event.is_set() or self.removed.is_set()
            self.out.put(EndOfStream(self.stream_id, self.frames, error, stopped=stopped))

    def interrupt(self) -> None:
        self.source.interrupt()

    def remove(self) -> None:
        """End this stream alone (removed at run time): its end travels through the stages like any other."""
        self.removed.set()
        self.source.interrupt()
