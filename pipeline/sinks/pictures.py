"""Images of published frames that leave the box: redacted once per frame, for recordings, the preview and
event thumbnails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from pipeline.analytics.events import Event
from pipeline.analytics.thumbnails import thumbnail
from pipeline.messages import FrameResult
from pipeline.privacy import redacted
from pipeline.recorder import FrameSink
from pipeline.sinks.base import Published, ResultSink

FaceBoxes = Callable[[FrameResult], np.ndarray | None]
"""The face thread's recent face boxes on a frame's stream (redacted when faces are), or ``None``."""


class Redactor:
    """The published detections on the frame as it may leave the box (redacted where the stream's privacy says).

    It redacts a frame at most once, however many sinks picture it.
    """

    def __init__(self, faces: FaceBoxes | None = None) -> None:
        self.faces = faces
        self._last: tuple[Published, FrameResult] | None = None

    def picture(self, published: Published) -> FrameResult:
        if self._last is not None and self._last[0] is published:
            return self._last[1]
        privacy = published.privacy
        if privacy is None or not privacy.redact:
            pictured = published.result
        else:
            faces = self.faces(published.result) if self.faces is not None else None
            pictured = replace(published.result, frame=redacted(published.everything, privacy, faces).frame)
        self._last = (published, pictured)
        return pictured


class Thumbnailer:
    """A JPEG crop of an event's object from the redacted frame (``events.thumbnails``)."""

    def __init__(self, redactor: Redactor, quality: int) -> None:
        self.redactor = redactor
        self.quality = quality

    def __call__(self, published: Published, event: Event) -> bytes | None:
        return thumbnail(self.redactor.picture(published).frame.host_image(), event.box, self.quality)


class PictureSink(ResultSink):
    """Hands each published frame, redacted, to a :class:`~pipeline.recorder.FrameSink` (a recording, the preview)."""

    def __init__(self, name: str, frames: FrameSink, redactor: Redactor) -> None:
        self.name = name
        self.frames = frames
        self.redactor = redactor

    def on_result(self, published: Published) -> None:
        self.frames.write(self.redactor.picture(published), published.track_ids)

    def close(self) -> None:
        self.frames.close()
