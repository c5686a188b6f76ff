"""Planar YUV 4:2:0 frames (I420), and turning them into BGR exactly as OpenCV does.

A decoder's own output is I420: a full-size luma plane, then quarter-size U and
V planes, 1.5 bytes a pixel against BGR's 3. An ``(H, W)`` frame travels as one
``uint8`` array of ``(H * 3 / 2, W)`` rows (OpenCV's layout for
``COLOR_YUV2BGR_I420``): ``H`` rows of Y, then U, then V, each chroma plane
packed ``W / 2`` samples a row, straight on from the plane before. Conversion
is BT.601, limited range, chroma shared by each 2 x 2 block: what OpenCV's
decoder and ``cv2.cvtColor`` produce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

PixelLayout = Literal["bgr", "i420"]
"""How a frame's pixels are held: ``(H, W, 3)`` BGR, or ``(H * 3 / 2, W)`` planar I420."""

# OpenCV's fixed-point BT.601 coefficients (imgproc, color_yuv): value * 2**20.
_SHIFT = 20
_CY, _CUB, _CUG, _CVG, _CVR = 1220542, 2116026, -409993, -852492, 1673527


def i420_size(rows: int, width: int) -> tuple[int, int]:
    """Height and width of the picture an I420 array of ``rows`` x ``width`` holds."""
    return rows * 2 // 3, width


def check_i420(shape: tuple[int, ...]) -> str | None:
    """Why an array of ``shape`` is not an I420 frame, or ``None`` when it is one."""
    if len(shape) != 2:
        return f"expected a 2-D (H*3/2) x W I420 array, got shape {shape}"
    rows, width = shape
    if rows < 3 or rows % 3 or (rows * 2 // 3) % 2 or width < 2 or width % 2:
        return f"an I420 array needs an even width and height, got {shape} (rows must be 3/2 of an even height)"
    return None


def i420_to_bgr(image: np.ndarray) -> np.ndarray:
    """An ``(H * 3 / 2, W)`` I420 array as an ``(H, W, 3)`` BGR array (OpenCV)."""
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)


def i420_to_bgr_torch(frames: torch.Tensor) -> torch.Tensor:
    """``(..., H * 3 / 2, W)`` uint8 I420 tensors as ``(..., H, W, 3)`` uint8 BGR, equal to :func:`i420_to_bgr`.

    Integer arithmetic only, fixed shapes and no host synchronisation, so it
    runs inside a CUDA graph (the detector replays it with the letterbox).
    """
    import torch

    rows, width = int(frames.shape[-2]), int(frames.shape[-1])
    height = rows * 2 // 3
    lead = tuple(frames.shape[:-2])
    flat = frames.reshape(*lead, rows * width)  # chroma planes need not start on a row (height % 4 == 2)
    luma, quarter = height * width, height * width // 4

    def chroma(start: int) -> torch.Tensor:
        return flat[..., start : start + quarter].reshape(*lead, height // 2, width // 2).int() - 128

    u, v = chroma(luma), chroma(luma + quarter)
    half = 1 << (_SHIFT - 1)
    parts = (half + _CUB * u, half + _CVG * v + _CUG * u, half + _CVR * v)  # B, G, R offsets per 2 x 2 block
    y = (frames[..., :height, :].int() - 16).clamp_(min=0).mul_(_CY)
    out = []
    for offset in parts:
        # each chroma sample covers a 2 x 2 block of luma
        full = offset[..., :, None, :, None].expand(*lead, height // 2, 2, width // 2, 2).reshape(*lead, height, width)
        out.append(((y + full) >> _SHIFT).clamp_(0, 255))
    return torch.stack(out, -1).to(torch.uint8)


def on_host(image: Any) -> np.ndarray:
    """A NumPy image as it is; a torch tensor (a frame on the GPU) copied to the host."""
    return image if isinstance(image, np.ndarray) else image.cpu().numpy()


def to_bgr(image: Any, layout: PixelLayout) -> Any:
    """``image`` as BGR on the device it is on (a NumPy array, or a torch tensor)."""
    if layout == "bgr":
        return image
    if isinstance(image, np.ndarray):
        return i420_to_bgr(image)
    return i420_to_bgr_torch(image)
