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
        try:
            while (
                not self.stop_event.is_set()
                and not self.removed.is_set()
                and (self.max_frames is None or self.frames < self.max_frames)
            ):
                started = time.perf_counter()
                raw = self.source.read()
                self.clock.add(time.perf_counter() - started)
                if raw is None:
                    break
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
