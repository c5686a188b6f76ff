"""Annotated video output: boxes and labels drawn on each published frame, written to an MP4 file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.errors import EdgesightError
from pipeline.messages import FrameResult

log = logging.getLogger(__name__)

PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]


class FrameSink(Protocol):
    """Something that sees every published result (never allowed to break the data path)."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """The default: records nothing."""

    def write(self, result: FrameResult) -> None:
        pass

    def close(self) -> None:
        pass


def annotate(result: FrameResult) -> np.ndarray:
    """A copy of the frame with each detection's box, label and confidence drawn on it."""
    image = result.frame.host_image().copy()
    for det in result.detections:
        colour = PALETTE[det.class_id % len(PALETTE)]
        x1, y1, x2, y2 = (round(v) for v in det.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        text = f"{det.label} {det.confidence:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        cv2.rectangle(image, (x1, max(0, y1 - th - 4)), (x1 + tw + 2, y1), colour, -1)
        cv2.putText(image, text, (x1 + 1, max(th, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return image


class VideoRecorder:
    """Writes annotated frames of one stream to an MP4 file (other streams are ignored)."""

    def __init__(self, path: Path, stream_id: str, fps: float = 30.0) -> None:
        self.path = Path(path)
        self.stream_id = stream_id
        self.fps = fps
        self.frames = 0
        self.failed = False
        self._writer: cv2.VideoWriter | None = None
        parent = self.path.parent
        if not parent.is_dir():
            raise EdgesightError(f"cannot save video to '{self.path}': folder '{parent}' does not exist")

    def write(self, result: FrameResult) -> None:
        if result.stream_id != self.stream_id or self.failed:
            return
        try:
            image = annotate(result)
            if self._writer is None:
                h, w = image.shape[:2]
                self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
                if not self._writer.isOpened():
                    raise OSError(f"cannot open '{self.path}' for writing")
            self._writer.write(image)
            self.frames += 1
        except Exception as exc:  # an observer must not stop the pipeline; say so once and stop recording
            self.failed = True
            log.error("recording to '%s' stopped: %s", self.path, exc)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
