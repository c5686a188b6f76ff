"""Motion gating: a cheap look at each frame decides whether the model needs to see it.

A frame is moving when enough of it changed since the last frame the model saw
(frame differencing on a small blurred gray copy), or, with ``method: mog2``,
against OpenCV's background model. Still frames skip the model; the stream's last
detections are published again (marked ``reused``) or the frame is skipped, as
configured. A still scene still gets the model every ``keepalive_s`` of stream time.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.config import MotionConfig

SMALL_WIDTH = 160
"""Frames are compared at this width: motion needs no detail, and it keeps the check well under a millisecond."""


class MotionGate:
    """One stream's gate: ``moving(image, pts_ms)`` says whether this frame goes to the model."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._reference: np.ndarray | None = None
        self._last_run_ms: float | None = None
        self._mog2 = (
            cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=16, detectShadows=False)
            if config.method == "mog2"
            else None
        )
        self.frames = 0
        self.gated = 0

    def _small(self, image: Any) -> np.ndarray:
        """A blurred gray copy :data:`SMALL_WIDTH` wide. A frame decoded on the GPU is shrunk there first, so only
        the small copy crosses to the host."""
        h, w = image.shape[:2]
        size = (SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w)))
        if not isinstance(image, np.ndarray):  # a CUDA tensor (NVDEC), H x W x 3 uint8 BGR
            import torch.nn.functional as F

            nchw = image.permute(2, 0, 1)[None].float()
            image = F.interpolate(nchw, size=(size[1], size[0]), mode="area")[0].permute(1, 2, 0)
            image = image.round().clamp(0, 255).byte().cpu().numpy()
        else:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (5, 5), 0)

    def changed_share(self, small: np.ndarray) -> float:
        """The share of pixels that changed (against the last frame the model saw, or the background)."""
        if self._mog2 is not None:
            mask = self._mog2.apply(small)
            return float(np.count_nonzero(mask)) / mask.size
        if self._reference is None or self._reference.shape != small.shape:
            return 1.0
        diff = cv2.absdiff(small, self._reference)
        return float(np.count_nonzero(diff > self.config.pixel_threshold)) / diff.size

    def moving(self, image: Any, pts_ms: float) -> bool:
        """Whether ``image`` (a NumPy frame, or a CUDA tensor from NVDEC) goes to the model."""
        self.frames += 1
        small = self._small(image)
        share = self.changed_share(small)
        due = self._last_run_ms is None or pts_ms - self._last_run_ms >= self.config.keepalive_s * 1000.0
        if share >= self.config.min_area or due:
            self._reference = small
            self._last_run_ms = pts_ms
            return True
        self.gated += 1
        return False
