"""Letterboxing: Ultralytics' ``LetterBox`` on the CPU, and the same geometry as torch ops for the GPU.

The GPU version takes a uint8 ``(H, W, 3)`` BGR tensor already on the device
and returns the normalized ``(3, h, w)`` RGB model input, so a frame crosses
the bus once, as bytes, and every per-pixel operation runs on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

PAD_VALUE = 114
"""Grey padding, as Ultralytics pads."""


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where a source image lands inside the model input."""

    out_h: int
    out_w: int
    new_h: int
    new_w: int
    top: int
    left: int


def geometry(src_h: int, src_w: int, imgsz: int, stride: int, auto: bool) -> Geometry:
    """Ultralytics ``LetterBox.get_params`` (center, scale up): ``auto`` pads only to a multiple of ``stride``."""
    r = min(imgsz / src_h, imgsz / src_w)
    new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
    dw, dh = imgsz - new_w, imgsz - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    return Geometry(new_h + top + bottom, new_w + left + right, new_h, new_w, top, left)


class CpuLetterbox:
    """Ultralytics' ``LetterBox``, returning a contiguous RGB ``(3, h, w)`` uint8 array built with NumPy only.

    NumPy, not torch, so this stage never starts a second OpenMP team beside
    the inference thread's on a small CPU.
    """

    def __init__(self, imgsz: int, stride: int, auto: bool = True) -> None:
        from ultralytics.data.augment import LetterBox

        self._letterbox = LetterBox(imgsz, auto=auto, stride=stride)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        boxed: np.ndarray = self._letterbox(image=image)  # type: ignore[assignment]
        return np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))


class TorchLetterbox:
    """The same letterbox as torch ops on uint8 BGR frames, ``(H, W, 3)`` or a batch ``(B, H, W, 3)``.

    Resizing is bilinear without antialiasing, as OpenCV's ``INTER_LINEAR``
    that Ultralytics uses; results differ from the CPU path by rounding only.
    A batch of same-sized frames costs the same handful of kernels as one.
    """

    def __init__(self, imgsz: int, stride: int, dtype: torch.dtype, auto: bool = True) -> None:
        self.imgsz = imgsz
        self.stride = stride
        self.dtype = dtype
        self.auto = auto

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        single = frames.dim() == 3
        batch = frames[None] if single else frames
        h, w = int(batch.shape[1]), int(batch.shape[2])
        g = geometry(h, w, self.imgsz, self.stride, self.auto)
        nchw = batch.permute(0, 3, 1, 2)  # NHWC -> NCHW, a view
        if (g.new_h, g.new_w) != (h, w):
            size = (g.new_h, g.new_w)
            body = F.interpolate(nchw.float(), size=size, mode="bilinear", align_corners=False).round_().clamp_(0, 255)
        else:
            body = nchw.float()
        out = torch.full((len(batch), 3, g.out_h, g.out_w), PAD_VALUE / 255, dtype=self.dtype, device=batch.device)
        # BGR -> RGB and normalization on the small, resized images.
        out[:, :, g.top : g.top + g.new_h, g.left : g.left + g.new_w] = body.flip(1).div_(255)
        return out[0] if single else out
