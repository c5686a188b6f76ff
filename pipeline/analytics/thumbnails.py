"""JPEG crops of objects, attached to events as a third message part."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.analytics.geometry import grown_box

MARGIN = 0.1
"""Extra context around the box, as a share of its size."""


def thumbnail(image: np.ndarray, box: tuple[float, float, float, float], quality: int) -> bytes | None:
    """The box (plus a margin) cut from a BGR frame as JPEG bytes; ``None`` for an empty crop."""
    h, w = image.shape[:2]
    left, top, right, bottom = grown_box(box, MARGIN, w, h)
    if right <= left or bottom <= top:
        return None
    ok, data = cv2.imencode(".jpg", image[top:bottom, left:right], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else None
