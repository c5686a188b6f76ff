"""Instance masks of segmentation models: from prototypes to polygons and run-length encoding.

Masks are assembled the way Ultralytics' predictor does it (``process_mask``:
coefficients × prototypes, cropped to the box, upsampled to the model input,
thresholded) and kept at the model input's resolution, one byte per pixel.
They become polygons in source pixels (Ultralytics' ``masks2segments``, then
simplified) or COCO RLE (pycocotools) only when a message is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

MASK_COEFFICIENTS = 32
"""Mask coefficients per candidate row of a YOLO segmentation head (after the class scores)."""


def assemble(proto: torch.Tensor, rows: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Binary ``(N, h, w)`` uint8 masks at the model input for kept ``rows`` (input pixels, coefficients last)."""
    import torch
    from ultralytics.utils import ops

    if not len(rows):
        return np.zeros((0, *input_hw), np.uint8)
    coeffs = torch.from_numpy(np.ascontiguousarray(rows[:, -MASK_COEFFICIENTS:])).to(proto.dtype)
    boxes = torch.from_numpy(np.ascontiguousarray(rows[:, :4])).to(proto.dtype)
    masks = ops.process_mask(proto, coeffs, boxes, input_hw, upsample=True)
    return masks.to(torch.uint8).numpy()


@dataclass(frozen=True, slots=True)
class InstanceMasks:
    """One frame's masks, one per detection, at the letterboxed model input (``data`` is ``(N, h, w)`` uint8)."""

    data: np.ndarray = field(repr=False)
    source_hw: tuple[int, int]
    to_frame: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    """With image operations before the model: maps ``source_hw`` points back to the original frame."""

    def __post_init__(self) -> None:
        if self.data.ndim != 3 or self.data.dtype != np.uint8:
            raise ValueError(f"masks must be an (N, h, w) uint8 array, got {self.data.dtype} {self.data.shape}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def subset(self, keep: np.ndarray) -> InstanceMasks:
        return InstanceMasks(self.data[keep], self.source_hw, self.to_frame)

    def polygons(self, tolerance_px: float = 0.5) -> list[list[list[float]]]:
        """Per mask, one closed polygon ``[[x, y], …]`` in source pixels (``[]`` for an empty mask).

        Separate pieces are joined into one outline, as Ultralytics' ``masks.xy``
        does; the outline is then simplified (Douglas-Peucker) so that no point
        moves more than ``tolerance_px`` source pixels (``0`` keeps every vertex).
        """
        from ultralytics.utils import ops

        if not len(self):
            return []
        input_hw = self.data.shape[1:]
        gain = min(input_hw[0] / self.source_hw[0], input_hw[1] / self.source_hw[1])
        out: list[list[list[float]]] = []
        for segment in ops.masks2segments(self.data, strategy="all"):
            if len(segment) and tolerance_px > 0:
                curve = segment.reshape(-1, 1, 2)
                segment = cv2.approxPolyDP(curve, tolerance_px * gain, closed=True).reshape(-1, 2)
            if len(segment) < 3:
                out.append([])
                continue
            pts = ops.scale_coords(input_hw, segment.astype(np.float32), self.source_hw, normalize=False)
            if self.to_frame is not None:
                pts = self.to_frame(np.asarray(pts, np.float64))
            out.append(np.round(np.asarray(pts, np.float64), 1).tolist())
        return out

    def source_masks(self) -> np.ndarray:
        """The masks as ``(N, H, W)`` bool arrays in source pixels (the letterbox undone by ``scale_masks``)."""
        import torch
        from ultralytics.utils import ops

        h, w = self.source_hw
        if not len(self):
            return np.zeros((0, h, w), bool)
        scaled = ops.scale_masks(torch.from_numpy(self.data)[None].float(), (h, w))[0]
        return (scaled > 0.5).numpy()

    def rle(self) -> list[dict[str, Any]]:
        """Per mask, COCO run-length encoding in source pixels: ``{"size": [H, W], "counts": str}``."""
        from pycocotools import mask as coco_mask

        if not len(self):
            return []
        fortran = np.asfortranarray(self.source_masks().transpose(1, 2, 0).astype(np.uint8))
        return [
            {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}
            for r in coco_mask.encode(fortran)
        ]
