"""Typed, frozen messages that cross the pipeline's queues.

Every queue carries exactly one of these types, plus the :class:`EndOfStream`
sentinel. Shapes are checked once, when a message is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded BGR frame from a source."""

    stream_id: str
    frame_index: int
    pts_ms: float
    captured_at: float
    image: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise TypeError(f"frame {self.frame_index} of '{self.stream_id}': image must be a uint8 array")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(
                f"frame {self.frame_index} of '{self.stream_id}': expected an HxWx3 BGR image, got shape {img.shape}"
            )

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class PreparedFrame:
    """A frame plus the engine's model input built from it (letterboxed, normalized)."""

    frame: Frame
    model_input: Any = field(repr=False)

    @property
    def stream_id(self) -> str:
        return self.frame.stream_id


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object; ``box`` is ``(x1, y1, x2, y2)`` in source-frame pixels."""

    class_id: int
    label: str
    confidence: float
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        if len(self.box) != 4:
            raise ValueError(f"box must have 4 numbers, got {self.box!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    def to_json(self) -> dict[str, Any]:
        return {
            "class_id": self.class_id,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "box": [round(v, 2) for v in self.box],
        }


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The detections found in one frame, ready to publish."""

    frame: Frame
    detections: tuple[Detection, ...]
    infer_ms: float = 0.0

    @property
    def stream_id(self) -> str:
        return self.frame.stream_id


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """Sentinel sent by a capture thread when its stream ends; every stage forwards it.

    ``error`` is ``None`` for a normal end (file finished, frame limit reached,
    pipeline stopped) and a one-line description when the source failed.
    """

    stream_id: str
    frames: int
    error: str | None = None
    stopped: bool = False


QueueItem = Frame | PreparedFrame | FrameResult | EndOfStream
