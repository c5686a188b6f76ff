"""The image operations of :mod:`pipeline.imageops` on torch tensors: frames that live on the GPU stay there.

Every function takes and returns an ``H x W x 3`` ``uint8`` BGR tensor on any
device and follows OpenCV's definition of the same operation (the tests hold
each one to its OpenCV twin), so a stream gives the model the same picture
whether its frames were operated on by the CPU or by the GPU. Nothing here
synchronizes with the device (but :func:`finish`): the work is queued on the current CUDA stream.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# OpenCV's sRGB (D65) matrices, as its Lab conversion uses them.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.950456, 1.0, 1.088754])


class OnDevice:
    """A host array, copied once to each device that asks for it: a small copy from pageable memory every frame
    would wait for the GPU each time."""

    def __init__(self, array: np.ndarray) -> None:
        self._host = torch.from_numpy(np.ascontiguousarray(array))
        self._copies: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        copy = self._copies.get(device)
        if copy is None:
            copy = self._copies[device] = self._host.to(device)
        return copy


# RGB→XYZ and XYZ→RGB, white-scaled and transposed for ``pixels @ m``
_TO_XYZ = OnDevice((_RGB_TO_XYZ / _WHITE[:, None]).T.astype(np.float32))
_FROM_XYZ = OnDevice((np.linalg.inv(_RGB_TO_XYZ) * _WHITE[None, :]).T.astype(np.float32))


def _as_float(image: torch.Tensor) -> torch.Tensor:
    """``1 x 3 x H x W`` float32."""
    return image.permute(2, 0, 1)[None].float()


def _to_uint8(nchw: torch.Tensor) -> torch.Tensor:
    return nchw[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).contiguous()


# -- geometric -------------------------------------------------------------------------------------------------
def crop(image: torch.Tensor, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    return image[y1:y2, x1:x2].contiguous()


def rotate(image: torch.Tensor, degrees: int) -> torch.Tensor:
    """Clockwise by 90, 180 or 270 degrees (``torch.rot90`` turns the other way)."""
    return torch.rot90(image, k=-(degrees // 90), dims=(0, 1)).contiguous()


def flip(image: torch.Tensor, axis: str) -> torch.Tensor:
    dims = {"horizontal": [1], "vertical": [0], "both": [0, 1]}[axis]
    return torch.flip(image, dims=dims).contiguous()


@functools.lru_cache(maxsize=32)
def _area_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """``(n_out, n_in)``: how much of each input pixel falls into each output pixel, rows summing to one."""
    scale = n_in / n_out
    start = torch.arange(n_out, device=device, dtype=torch.float64)[:, None] * scale
    left = torch.arange(n_in, device=device, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(start + scale, left + 1) - torch.maximum(start, left)).clamp_min(0)
    return (overlap / scale).float()


def resize(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``cv2.INTER_AREA`` when shrinking (exact pixel-area averages, as two matrix products), else bilinear
    (``cv2.INTER_LINEAR``)."""
    h, w = image.shape[:2]
    if width < w and height <= h:
        rows, cols = _area_weights(h, height, image.device), _area_weights(w, width, image.device)
        out = torch.einsum("yh,hwc,xw->yxc", rows, image.float(), cols)
        return out.round().clamp(0, 255).to(torch.uint8).contiguous()
    out = F.interpolate(_as_float(image), size=(height, width), mode="bilinear", align_corners=False)
    return _to_uint8(out)


class Remapper:
    """``cv2.remap`` (bilinear, black outside) with fixed maps, uploaded once per device."""

    def __init__(self, map_x: np.ndarray, map_y: np.ndarray) -> None:
        h, w = map_x.shape
        grid = np.stack([map_x * 2.0 / (w - 1) - 1.0, map_y * 2.0 / (h - 1) - 1.0], axis=-1)
        self._grid = OnDevice(grid.astype(np.float32)[None])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        grid = self._grid.on(image.device)
        out = F.grid_sample(_as_float(image), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return _to_uint8(out)


# -- photometric -----------------------------------------------------------------------------------------------
class Lut:
    """A 256-entry lookup table applied to every channel (``cv2.LUT``), uploaded once per device."""

    def __init__(self, table: np.ndarray) -> None:
        self._table = OnDevice(table)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self._table.on(image.device)[image.long()]


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """OpenCV's fixed-point ``BGR2GRAY`` (0.114 B + 0.587 G + 0.299 R), as three channels."""
    b, g, r = image.unbind(-1)
    y = (b.int() * 1868 + g.int() * 9617 + r.int() * 4899 + 8192) >> 14
    return y.to(torch.uint8)[..., None].expand(-1, -1, 3).contiguous()


def _bgr_to_lab(image: torch.Tensor) -> torch.Tensor:
    """Float ``H x W x 3`` Lab with OpenCV's 8-bit scaling: L in 0…255, a and b offset by 128."""
    rgb = image.flip(-1).float() / 255.0
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _TO_XYZ.on(image.device)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    y = xyz[..., 1]
    lightness = torch.where(y > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * y)
    a = 500.0 * (f[..., 0] - f[..., 1]) + 128.0
    b = 200.0 * (f[..., 1] - f[..., 2]) + 128.0
    return torch.stack([lightness * 255.0 / 100.0, a, b], -1)


def _lab_to_bgr(lab: torch.Tensor) -> torch.Tensor:
    lightness = lab[..., 0] * 100.0 / 255.0
    fy = (lightness + 16.0) / 116.0
    fx = fy + (lab[..., 1] - 128.0) / 500.0
    fz = fy - (lab[..., 2] - 128.0) / 200.0
    f = torch.stack([fx, fy, fz], -1)
    xyz = torch.where(f > 0.206893, f**3, (f - 16.0 / 116.0) / 7.787)
    xyz[..., 1] = torch.where(lightness > 7.9996, xyz[..., 1], lightness / 903.3)
    linear = (xyz @ _FROM_XYZ.on(lab.device)).clamp(0.0, 1.0)
    rgb = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1.0 / 2.4) - 0.055)
    return (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).flip(-1).contiguous()


def clahe_lut(lightness: torch.Tensor, clip_limit: float, tiles: int) -> torch.Tensor:
    """OpenCV's CLAHE on one ``uint8`` plane: per-tile clipped histograms, equalized, bilinearly blended."""
    h, w = lightness.shape
    ph, pw = -h % tiles, -w % tiles
    padded = lightness
    if ph or pw:  # OpenCV pads to whole tiles by reflection (BORDER_REFLECT_101) for the histograms only
        padded = F.pad(lightness[None, None].float(), (0, pw, 0, ph), mode="reflect")[0, 0].to(torch.uint8)
    th, tw = padded.shape[0] // tiles, padded.shape[1] // tiles
    area = th * tw
    cells = padded.reshape(tiles, th, tiles, tw).permute(0, 2, 1, 3).reshape(tiles * tiles, area).long()
    hist = torch.zeros(tiles * tiles, 256, dtype=torch.int64, device=lightness.device)
    hist.scatter_add_(1, cells, torch.ones_like(cells))
    limit = max(int(clip_limit * area / 256), 1)
    excess = (hist - limit).clamp_min(0).sum(1, keepdim=True)
    hist = hist.clamp_max(limit) + excess // 256
    residual = excess - (excess // 256) * 256
    step = (256 // residual.clamp_min(1)).clamp_min(1)
    bins = torch.arange(256, device=lightness.device)[None]
    hist += ((bins % step == 0) & (bins // step < residual)).long()
    luts = (hist.cumsum(1).double() * (255.0 / area)).round().clamp(0, 255).reshape(-1)

    def axis(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(n, device=lightness.device, dtype=torch.float64) / size - 0.5
        first = pos.floor()
        weight = pos - first
        return first.long().clamp_min(0), (first.long() + 1).clamp_max(tiles - 1), weight

    ty1, ty2, ya = axis(h, th)
    tx1, tx2, xa = axis(w, tw)
    value = lightness.long()

    def lut(ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        return luts[((ty[:, None] * tiles + tx[None, :]) * 256) + value]

    ya, xa = ya[:, None], xa[None, :]
    top = lut(ty1, tx1) * (1 - xa) + lut(ty1, tx2) * xa
    bottom = lut(ty2, tx1) * (1 - xa) + lut(ty2, tx2) * xa
    return (top * (1 - ya) + bottom * ya).round().clamp(0, 255).to(torch.uint8)


def clahe(image: torch.Tensor, clip_limit: float, tile: int) -> torch.Tensor:
    """CLAHE of the lightness (Lab), colours kept: :func:`pipeline.imageops.clahe` on the GPU."""
    lab = _bgr_to_lab(image).round().clamp(0, 255)  # 8-bit Lab, as OpenCV equalizes and converts back
    lab[..., 0] = clahe_lut(lab[..., 0].to(torch.uint8), clip_limit, tile).float()
    return _lab_to_bgr(lab)


def bilateral(image: torch.Tensor, diameter: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    """``cv2.bilateralFilter`` for a 3-channel ``uint8`` image: a disc of neighbours, weighted by distance and by
    the L1 colour difference, edges reflected."""
    radius = diameter // 2
    src = image.permute(2, 0, 1).float()
    padded = F.pad(src[None], (radius, radius, radius, radius), mode="reflect")[0]
    h, w = image.shape[:2]
    total = torch.zeros_like(src)
    weights = torch.zeros((h, w), device=image.device)
    color_coeff, space_coeff = -0.5 / sigma_color**2, -0.5 / sigma_space**2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r = math.sqrt(dy * dy + dx * dx)
            if r > radius:
                continue
            neighbour = padded[:, radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            distance = (neighbour - src).abs().sum(0)
            weight = torch.exp(distance * distance * color_coeff) * math.exp(r * r * space_coeff)
            total += neighbour * weight
            weights += weight
    return (total / weights).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def finish(image: torch.Tensor) -> None:
    """Wait for the work queued on ``image``'s device's current stream (what made ``image``), on a CUDA device."""
    if image.is_cuda:
        torch.cuda.current_stream(image.device).synchronize()


def upload(image: np.ndarray, device: Any) -> torch.Tensor:
    """A host frame on ``device`` (for operations on the GPU before the model)."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device, non_blocking=False)
