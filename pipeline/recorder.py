"""Annotated output: zones, lines, masks, boxes, labels and track ids drawn on published frames, to an MP4 file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np

from pipeline.analytics.geometry import to_pixels
from pipeline.config import LineConfig, StreamConfig, ZoneConfig
from pipeline.errors import EdgesightError
from pipeline.imageops import UNMOVED, ImageOps, PointMap, map_boxes
from pipeline.media.clips import MS, StreamClock
from pipeline.messages import FrameResult

log = logging.getLogger(__name__)

PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]


class FrameSink(Protocol):
    """Something that sees every published result (never allowed to break the data path).

    ``track_ids`` (one per detection, negative for none) come with the result when tracking is on.
    """

    def write(self, result: FrameResult, track_ids: np.ndarray | None = None) -> None: ...

    def close(self) -> None: ...


LINE_COLOUR = (0, 255, 255)  # yellow: counting lines
ZONE_COLOUR = (255, 0, 255)  # magenta: zones


@dataclass(frozen=True)
class Overlays:
    """What is drawn besides detections: each stream's counting lines and zones."""

    regions: dict[str, tuple[list[LineConfig], list[ZoneConfig]]] = field(default_factory=dict)

    @classmethod
    def from_streams(cls, streams: list[StreamConfig]) -> Overlays:
        return cls({s.id: (list(s.lines), list(s.zones)) for s in streams})


def annotate(
    result: FrameResult,
    track_ids: np.ndarray | None = None,
    overlays: Overlays | None = None,
    view: ImageOps | None = None,
) -> np.ndarray:
    """A copy of the frame with zones, lines, masks, boxes, labels, confidences and track ids drawn on it.

    With ``view`` (a stream's image operations), the picture is the frame after them (what the model saw: rotated,
    cropped, enhanced) and everything is drawn where it lands there.
    """
    image = result.frame.host_image()
    h, w = image.shape[:2]
    to_view: PointMap = UNMOVED.forward
    if view is not None:
        image, to_view = view.view(image)
    image = image.copy()
    lines, zones = (overlays or Overlays()).regions.get(result.stream_id, ([], []))
    for zone in zones:
        pts = to_view(to_pixels(zone.points, zone.normalized, w, h)).round().astype(np.int32)
        cv2.polylines(image, [pts], True, ZONE_COLOUR, 2)
        cv2.putText(image, zone.name, tuple(int(v) for v in pts[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ZONE_COLOUR, 1)
    for line in lines:
        p1, p2 = to_view(to_pixels(line.points, line.normalized, w, h)).round().astype(np.int32)
        cv2.arrowedLine(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), LINE_COLOUR, 2, tipLength=0.03)
        cv2.putText(image, line.name, tuple(int(v) for v in p1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, LINE_COLOUR, 1)
    polygons = result.masks.polygons() if result.masks is not None else None
    ids = track_ids.tolist() if track_ids is not None else [-1] * len(result)
    for k, det in enumerate(result.detections):
        colour = PALETTE[det.class_id % len(PALETTE)]
        if polygons is not None and len(polygons[k]) >= 3:
            outline = np.round(to_view(np.asarray(polygons[k], np.float64))).astype(np.int32)
            tint = image.copy()
            cv2.fillPoly(tint, [outline], colour)
            cv2.addWeighted(tint, 0.35, image, 0.65, 0, dst=image)
        x1, y1, x2, y2 = (int(v) for v in map_boxes(np.array([det.box], np.float64), to_view)[0].round())
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        text = f"{det.label} {det.confidence:.2f}" + (f" #{ids[k]}" if ids[k] >= 0 else "")
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        cv2.rectangle(image, (x1, max(0, y1 - th - 4)), (x1 + tw + 2, y1), colour, -1)
        cv2.putText(image, text, (x1 + 1, max(th, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return image


class VideoRecorder:
    """Writes annotated frames of one stream to an H.264 MP4 file that browsers play (other streams are ignored).

    PyAV encodes (libx264); each frame is timed by its own presentation time, so a live stream's dropped frames
    leave no drift. ``fps`` is the rate the file declares.
    """

    def __init__(self, path: Path, stream_id: str, fps: float = 30.0, overlays: Overlays | None = None) -> None:
        self.path = Path(path)
        self.overlays = overlays
        self.stream_id = stream_id
        self.fps = fps
        self.frames = 0
        self.failed = False
        self._output: Any = None
        self._stream: Any = None
        self._clock = StreamClock()
        parent = self.path.parent
        if not parent.is_dir():
            raise EdgesightError(f"cannot save video to '{self.path}': folder '{parent}' does not exist")

    def write(self, result: FrameResult, track_ids: np.ndarray | None = None) -> None:
        if result.stream_id != self.stream_id or self.failed:
            return
        try:
            image = annotate(result, track_ids, self.overlays)
            h, w = image.shape[:2]
            image = np.ascontiguousarray(image[: h // 2 * 2, : w // 2 * 2])
            if self._output is None:
                self._open(image.shape[1], image.shape[0])
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = int(self._clock(result.frame.pts_ms)), MS
            for packet in self._stream.encode(frame):
                self._output.mux(packet)
            self.frames += 1
        except Exception as exc:  # an observer must not stop the pipeline; say so once and stop recording
            self.failed = True
            log.error("recording to '%s' stopped: %s", self.path, exc)

    def _open(self, w: int, h: int) -> None:
        try:
            self._output = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart"})
        except av.FFmpegError as exc:
            raise OSError(f"cannot open '{self.path}' for writing: {exc}") from exc
        stream = self._output.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt, stream.time_base = w, h, "yuv420p", MS
        stream.codec_context.time_base = MS
        stream.options = {"preset": "veryfast", "crf": "23"}
        self._stream = stream

    def close(self) -> None:
        if self._output is not None:
            try:
                for packet in self._stream.encode(None):
                    self._output.mux(packet)
            finally:
                self._output.close()
                self._output = None
