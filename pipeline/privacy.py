"""Redaction of faces (or whole persons) in every image that leaves the box: thumbnails and recordings.

Regions are the boxes of the configured labels in the frame's detections,
including those under the publishing threshold that only fed the tracker,
grown by a margin; they are pixelated (blocks of their mean colour), blurred
or filled before any image is encoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import cv2
import numpy as np

from pipeline.analytics import geometry
from pipeline.config import PrivacyConfig
from pipeline.messages import FrameResult

MARGIN = 0.15
"""Each side of a redacted box grows by this share of its size (hair, ears, chin)."""


def grown_box(box: Iterable[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A redacted region: the box grown by :data:`MARGIN` on each side, within the frame."""
    return geometry.grown_box(tuple(box), MARGIN, width, height)


def redact(image: np.ndarray, boxes: np.ndarray, method: str) -> np.ndarray:
    """A copy of a BGR ``image`` with each ``(x1, y1, x2, y2)`` box (grown by a margin) made unrecognisable."""
    out = image.copy()
    h, w = out.shape[:2]
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = grown_box(box, w, h)
        if x2 <= x1 or y2 <= y1:
            continue
        region = out[y1:y2, x1:x2]
        if method == "fill":
            region[:] = region.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        elif method == "blur":
            k = max(31, (max(x2 - x1, y2 - y1) // 2) | 1)
            small = cv2.resize(region, (max(1, (x2 - x1) // 8), max(1, (y2 - y1) // 8)), interpolation=cv2.INTER_AREA)
            region[:] = cv2.GaussianBlur(cv2.resize(small, (x2 - x1, y2 - y1)), (k, k), 0)
        else:  # pixelate: blocks of at least 8 px, at most 6 across the region
            block = max(8, max(x2 - x1, y2 - y1) // 6)
            small = cv2.resize(
                region, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)), interpolation=cv2.INTER_AREA
            )
            region[:] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out


def can_redact(privacy: PrivacyConfig, names: dict[int, str], faces: bool) -> bool:
    """Whether ``privacy`` can hide anything in a stream whose model gives classes ``names`` (with a face thread
    beside it when ``faces``): a label or class id of the model's, or ``face`` with a face thread."""
    wanted = set(privacy.redact)
    return bool(wanted & (set(names.values()) | set(names))) or (faces and "face" in wanted)


def redacted(result: FrameResult, privacy: PrivacyConfig, faces: np.ndarray | None = None) -> FrameResult:
    """``result`` with its frame's image redacted where ``privacy`` says (unchanged when nothing applies).

    ``faces``: face boxes found apart from ``result`` (the face thread's latest), redacted too when faces are.
    """
    if not privacy.redact:
        return result
    wanted = set(privacy.redact)
    labels = result.labels
    keep = np.array([labels.get(int(c), str(int(c))) in wanted or int(c) in wanted for c in result.boxes[:, 5]], bool)
    boxes = result.boxes[keep, :4] if len(result) else np.zeros((0, 4), np.float32)
    if faces is not None and "face" in wanted:
        boxes = np.concatenate([boxes, np.asarray(faces, np.float32).reshape(-1, 4)])
    if not len(boxes):
        return result
    image = redact(result.frame.host_image(), boxes, privacy.method)
    return replace(result, frame=replace(result.frame, image=image))
