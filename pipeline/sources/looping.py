"""A file played again from the start each time it ends (demos, soak runs, a stand-in for a camera)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engines.base import FrameFormat
from pipeline.sources.base import RawFrame, Source, frame_format


class LoopingSource:
    """Starts the source over at each end; timestamps keep increasing across loops.

    A source that can start over in place (``rewind()`` returns True: the
    NVDEC file source keeps its hardware decoder) does so; any other is
    released and a fresh one made by ``factory``. Making decoders is what
    costs: NVDEC's creation briefly holds up every CUDA thread of the process,
    and looped cameras started together all loop at the same instant.
    """

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
            self._offset_ms = self._last_ms + 1.0
            self._start_over()
            self.loops += 1
            frame = self._source.read()
        if frame is None:
            return None
        self._last_ms = frame.pts_ms + self._offset_ms
        return replace(frame, pts_ms=self._last_ms)

    def _start_over(self) -> None:
        rewind = getattr(self._source, "rewind", None)
        if rewind is not None and rewind():
            return
        self._source.release()
        self._source = self._factory()
        self._source.open()

    def release(self) -> None:
        self._source.release()

    def interrupt(self) -> None:
        self._interrupted = True
        self._source.interrupt()
