"""A file played again from the start each time it ends (demos, soak runs, a stand-in for a camera)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engines.base import FrameFormat
from pipeline.sources.base import RawFrame, Source, frame_format


class LoopingSource:
    """Reopens a fresh source from ``factory`` at each end; timestamps keep increasing across loops."""

    live = False

    def __init__(self, factory: Callable[[], Source]) -> None:
        self._factory = factory
        self._source = factory()
        self.description = f"{self._source.description} (looped)"
        self._offset_ms = 0.0
        self._last_ms = 0.0
        self._interrupted = False
        self.loops = 0

    def open(self) -> None:
        self._source.open()

    @property
    def frame_format(self) -> FrameFormat | None:
        return frame_format(self._source)

    def read(self) -> RawFrame | None:
        frame = self._source.read()
        if frame is None and not self._interrupted:
            self._source.release()
            self._offset_ms = self._last_ms + 1.0
            self._source = self._factory()
            self._source.open()
            self.loops += 1
            frame = self._source.read()
        if frame is None:
            return None
        self._last_ms = frame.pts_ms + self._offset_ms
        return replace(frame, pts_ms=self._last_ms)

    def release(self) -> None:
        self._source.release()

    def interrupt(self) -> None:
        self._interrupted = True
        self._source.interrupt()
