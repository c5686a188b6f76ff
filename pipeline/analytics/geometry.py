"""Plane geometry for lines and zones, in image coordinates (x right, y down)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Point = tuple[float, float]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def anchors(boxes: np.ndarray) -> np.ndarray:
    """Bottom-centre points ``(N, 2)`` of ``(N, ≥4)`` ``x1, y1, x2, y2`` boxes: where an object meets the ground."""
    return np.stack(((boxes[:, 0] + boxes[:, 2]) / 2.0, boxes[:, 3]), axis=1) if len(boxes) else np.zeros((0, 2))


def to_pixels(points: Sequence[Point], normalized: bool, width: int, height: int) -> np.ndarray:
    """``points`` as float pixel coordinates (scaled by the frame size when ``normalized``)."""
    arr = np.asarray(points, dtype=np.float64)
    return arr * np.array([width, height], dtype=np.float64) if normalized else arr


def grown_box(box: Sequence[float], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``x1, y1, x2, y2`` grown by ``margin`` (a share of its size) on each side, in whole pixels within the frame."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return (
        max(0, int(np.floor(x1 - mx))),
        max(0, int(np.floor(y1 - my))),
        min(width, int(np.ceil(x2 + mx))),
        min(height, int(np.ceil(y2 + my))),
    )


def side(p1: np.ndarray, p2: np.ndarray, point: np.ndarray) -> float:
    """The cross product ``(p2 − p1) × (point − p1)``: its sign says which side of the line ``point`` is on."""
    return float((p2[0] - p1[0]) * (point[1] - p1[1]) - (p2[1] - p1[1]) * (point[0] - p1[0]))


def crosses_segment(a0: np.ndarray, a1: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> bool:
    """Whether the path ``a0 → a1`` meets the segment ``p1 p2`` (the ends of the segment count)."""
    s0, s1 = side(p1, p2, a0), side(p1, p2, a1)
    if s0 * s1 > 0:
        return False
    d0, d1 = side(a0, a1, p1), side(a0, a1, p2)
    return d0 * d1 <= 0


def inside(polygon: np.ndarray, point: np.ndarray) -> bool:
    """Whether ``point`` lies inside ``polygon`` or on its border (OpenCV's point-in-polygon test)."""
    contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0
