"""Per-stream image operations before inference, and the way back to the original frame's coordinates.

Each operation is a small function over a BGR ``uint8`` image: OpenCV
underneath for a NumPy frame, its twin in :mod:`pipeline.imageops_gpu` for a
frame on the GPU (torch tensor), so frames decoded or uploaded there are never
copied back to the host for it. Geometric ones (crop, rotate, flip, resize, undistort) also
return how to map points of their output back to their input; photometric ones
(CLAHE, gamma, denoise, grayscale) leave coordinates alone. A stream's
:class:`ImageOps` runs its list in order and maps detections back through the
whole chain, so boxes, landmarks and mask outlines are always reported in the
original frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.errors import ConfigError

PointMap = Callable[[np.ndarray], np.ndarray]
"""Maps ``(N, 2)`` float points of an operation's output to its input."""

Image = Any
"""A BGR ``uint8`` frame: ``H x W x 3`` NumPy array, or torch tensor (on the GPU)."""


def _on_host(image: Image) -> bool:
    return isinstance(image, np.ndarray)


def _gpu() -> Any:
    from pipeline import imageops_gpu

    return imageops_gpu


def _identity(points: np.ndarray) -> np.ndarray:
    return points


@dataclass(frozen=True)
class Warp:
    """How points move through one operation: ``back`` (its output to its input) and ``forward`` (the reverse).
    Calling it maps back."""

    back: PointMap
    forward: PointMap

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.back(points)


UNMOVED = Warp(_identity, _identity)


# -- geometric operations ------------------------------------------------------------------------------------
def crop(image: Image, x: float, y: float, width: float, height: float) -> tuple[Image, Warp]:
    """The region ``x, y, width, height`` (fractions of the frame when all are ≤ 1, else pixels)."""
    h, w = image.shape[:2]
    if max(x, y, width, height) <= 1.0:
        x, y, width, height = x * w, y * h, width * w, height * h
    x1, y1 = round(max(0.0, x)), round(max(0.0, y))
    x2, y2 = round(min(float(w), x + width)), round(min(float(h), y + height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ConfigError(f"crop {x:g},{y:g},{width:g},{height:g} leaves nothing of a {w}x{h} frame")
    offset = np.array([x1, y1], np.float64)
    out = np.ascontiguousarray(image[y1:y2, x1:x2]) if _on_host(image) else _gpu().crop(image, x1, y1, x2, y2)
    return out, Warp(lambda p: p + offset, lambda p: p - offset)


_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def rotate(image: Image, degrees: int) -> tuple[Image, Warp]:
    """Rotate clockwise by 90, 180 or 270 degrees (a camera mounted sideways or upside down)."""
    h, w = image.shape[:2]
    if degrees not in _ROTATIONS:
        raise ConfigError(f"rotate: {degrees} degrees; use 90, 180 or 270")
    out = cv2.rotate(image, _ROTATIONS[degrees]) if _on_host(image) else _gpu().rotate(image, degrees)
    if degrees == 90:
        return out, Warp(lambda p: np.stack([p[:, 1], h - p[:, 0]], 1), lambda p: np.stack([h - p[:, 1], p[:, 0]], 1))
    if degrees == 180:
        half_turn = lambda p: np.stack([w - p[:, 0], h - p[:, 1]], 1)  # noqa: E731
        return out, Warp(half_turn, half_turn)
    return out, Warp(lambda p: np.stack([w - p[:, 1], p[:, 0]], 1), lambda p: np.stack([p[:, 1], w - p[:, 0]], 1))


def flip(image: Image, axis: str) -> tuple[Image, Warp]:
    """Mirror ``horizontal`` (left-right), ``vertical`` (top-bottom) or ``both``."""
    h, w = image.shape[:2]
    code = {"horizontal": 1, "vertical": 0, "both": -1}[axis]
    sx, sy = axis in ("horizontal", "both"), axis in ("vertical", "both")
    out = cv2.flip(image, code) if _on_host(image) else _gpu().flip(image, axis)

    def mirror(p: np.ndarray) -> np.ndarray:
        return np.stack([w - p[:, 0] if sx else p[:, 0], h - p[:, 1] if sy else p[:, 1]], 1)

    return out, Warp(mirror, mirror)


def resize(image: Image, width: int | None, height: int | None) -> tuple[Image, Warp]:
    """Scale to ``width`` × ``height`` (one of them may be left out: the aspect ratio is kept)."""
    h, w = image.shape[:2]
    if width is None and height is None:
        raise ConfigError("resize needs width, height or both")
    out_w = int(width) if width else max(1, round(w * int(height or h) / h))
    out_h = int(height) if height else max(1, round(h * out_w / w))
    scale = np.array([w / out_w, h / out_h], np.float64)
    warp = Warp(lambda p: p * scale, lambda p: p / scale)
    if not _on_host(image):
        return _gpu().resize(image, out_w, out_h), warp
    interpolation = cv2.INTER_AREA if out_w < w else cv2.INTER_LINEAR
    return cv2.resize(image, (out_w, out_h), interpolation=interpolation), warp


@dataclass(frozen=True)
class LensCalibration:
    """OpenCV's pinhole model: camera matrix and distortion coefficients, from a YAML/JSON/XML calibration file."""

    matrix: np.ndarray
    distortion: np.ndarray

    @classmethod
    def load(cls, path: Path) -> LensCalibration:
        """Reads ``camera_matrix`` and ``dist_coeffs`` (OpenCV FileStorage: what ``cv2.calibrateCamera`` users save)."""
        if not path.is_file():
            raise ConfigError(f"lens calibration file not found: '{path}'")
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
        try:
            matrix, dist = fs.getNode("camera_matrix").mat(), fs.getNode("dist_coeffs").mat()
        finally:
            fs.release()
        if matrix is None or matrix.shape != (3, 3) or dist is None or dist.size not in (4, 5, 8, 12, 14):
            raise ConfigError(f"'{path}': needs a 3x3 camera_matrix and 4-14 dist_coeffs (OpenCV FileStorage)")
        return cls(matrix.astype(np.float64), dist.reshape(-1).astype(np.float64))


UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-6)


class Undistorter:
    """Undistorts frames with a calibration (remap tables built once per frame size)."""

    def __init__(self, calibration: LensCalibration) -> None:
        self.calibration = calibration
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._remappers: dict[tuple[int, int], Any] = {}

    def __call__(self, image: Image) -> tuple[Image, Warp]:
        h, w = image.shape[:2]
        k, d = self.calibration.matrix, self.calibration.distortion
        maps = self._maps.get((h, w))
        if maps is None:
            maps = self._maps[(h, w)] = cv2.initUndistortRectifyMap(k, d, None, k, (w, h), cv2.CV_32FC1)
        if _on_host(image):
            undistorted = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR)
        else:
            remapper = self._remappers.get((h, w))
            if remapper is None:
                remapper = self._remappers[(h, w)] = _gpu().Remapper(*maps)
            undistorted = remapper(image)

        def to_distorted(points: np.ndarray) -> np.ndarray:
            normalized = (points - k[:2, 2]) / np.array([k[0, 0], k[1, 1]])
            rays = np.concatenate([normalized, np.ones((len(points), 1))], 1).astype(np.float64)
            projected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, d)
            return projected.reshape(-1, 2)

        def to_undistorted(points: np.ndarray) -> np.ndarray:
            # iterated to convergence: the default few iterations drift near strongly distorted corners
            moved = cv2.undistortPoints(
                points.reshape(-1, 1, 2).astype(np.float64), k, d, None, None, k, UNDISTORT_CRITERIA
            )
            return moved.reshape(-1, 2)

        return undistorted, Warp(to_distorted, to_undistorted)


# -- photometric operations ----------------------------------------------------------------------------------
def clahe(image: Image, clip_limit: float = 2.0, tile: int = 8) -> Image:
    """Contrast-limited adaptive histogram equalization of the lightness (LAB), colours kept."""
    if not _on_host(image):
        return _gpu().clahe(image, clip_limit, tile)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


class Gamma:
    """Gamma correction; ``value`` > 1 lifts the shadows (low light), < 1 darkens."""

    def __init__(self, value: float) -> None:
        self.table = (np.linspace(0.0, 1.0, 256) ** (1.0 / value) * 255.0).round().astype(np.uint8)
        self._gpu_lut: Any = None

    def __call__(self, image: Image) -> Image:
        if _on_host(image):
            return cv2.LUT(image, self.table)
        if self._gpu_lut is None:
            self._gpu_lut = _gpu().Lut(self.table)
        return self._gpu_lut(image)


def gamma(image: Image, value: float) -> Image:
    """Gamma correction (see :class:`Gamma`, which keeps its table between frames)."""
    return Gamma(value)(image)


DENOISE_DIAMETER, DENOISE_SIGMA_SPACE = 5, 5.0


def denoise(image: Image, strength: float = 5.0) -> Image:
    """Edge-preserving smoothing (bilateral filter): cheap enough for every frame, unlike non-local means."""
    if not _on_host(image):
        return _gpu().bilateral(image, DENOISE_DIAMETER, strength * 10.0, DENOISE_SIGMA_SPACE)
    return cv2.bilateralFilter(image, DENOISE_DIAMETER, strength * 10.0, DENOISE_SIGMA_SPACE)


def grayscale(image: Image) -> Image:
    """Gray, kept as three channels (models expect three)."""
    if not _on_host(image):
        return _gpu().grayscale(image)
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


# -- a stream's chain ---------------------------------------------------------------------------------------
Step = Callable[[Image], tuple[Image, Warp]]


def photometric(fn: Callable[[Image], Image]) -> Step:
    return lambda image: (fn(image), UNMOVED)


@dataclass
class ImageOps:
    """A stream's operations in order; :meth:`apply` also returns the way back to the original frame."""

    steps: list[tuple[str, Step]]
    costs: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each operation so far (metrics and benchmarks); 0 for each from the start."""
    calls: int = 0

    def __post_init__(self) -> None:
        for name, _ in self.steps:
            self.costs.setdefault(name, 0.0)

    def apply(self, image: Image) -> tuple[Image, PointMap]:
        """``image`` operated on (on the host or the GPU, where it is) and the way back to its coordinates."""
        image, warp = self.run(image)
        return image, warp.back

    def view(self, image: Image) -> tuple[Image, PointMap]:
        """``image`` operated on and the way from its coordinates to the result's (to draw on what the model saw)."""
        image, warp = self.run(image)
        return image, warp.forward

    def run(self, image: Image) -> tuple[Image, Warp]:
        """``image`` operated on, and the whole chain's :class:`Warp` (back to the frame, forward from it).

        A frame on the GPU is finished when this returns (the operations queued on
        the current CUDA stream have run), as the model's ``prepare`` expects.
        """
        image, warps = self._run(image)
        if not _on_host(image):
            _gpu().finish(image)

        def back(points: np.ndarray) -> np.ndarray:
            out = np.asarray(points, np.float64).reshape(-1, 2)
            for warp in reversed(warps):
                out = warp.back(out)
            return out

        def forward(points: np.ndarray) -> np.ndarray:
            out = np.asarray(points, np.float64).reshape(-1, 2)
            for warp in warps:
                out = warp.forward(out)
            return out

        return image, Warp(back, forward)

    def _run(self, image: Image) -> tuple[Image, list[Warp]]:
        warps: list[Warp] = []
        for name, step in self.steps:
            started = time.perf_counter()
            image, warp = step(image)
            self.costs[name] = self.costs.get(name, 0.0) + time.perf_counter() - started
            warps.append(warp)
        self.calls += 1
        return (np.ascontiguousarray(image) if _on_host(image) else image), warps


def build_ops(specs: Sequence[Any]) -> ImageOps:
    """An :class:`ImageOps` from validated config entries (``pipeline.config``'s ``*Op`` models)."""
    steps: list[tuple[str, Step]] = []
    for spec in specs:
        op = spec.op
        step: Step
        if op == "crop":
            step = partial(crop, x=spec.x, y=spec.y, width=spec.width, height=spec.height)
        elif op == "rotate":
            step = partial(rotate, degrees=spec.degrees)
        elif op == "flip":
            step = partial(flip, axis=spec.axis)
        elif op == "resize":
            step = partial(resize, width=spec.width, height=spec.height)
        elif op == "undistort":
            step = Undistorter(LensCalibration.load(Path(spec.calibration).expanduser()))
        elif op == "clahe":
            step = photometric(partial(clahe, clip_limit=spec.clip_limit, tile=spec.tile))
        elif op == "gamma":
            step = photometric(Gamma(spec.value))
        elif op == "denoise":
            step = photometric(partial(denoise, strength=spec.strength))
        elif op == "grayscale":
            step = photometric(grayscale)
        else:  # the config's discriminated union makes this unreachable
            raise ConfigError(f"unknown image operation '{op}'")
        steps.append((op, step))
    return ImageOps(steps)


def upload(image: np.ndarray, device: str) -> Image:
    """A host frame copied to ``device`` (a CUDA device), for operations on the GPU the model runs on."""
    return _gpu().upload(image, device)


def map_boxes(rows: np.ndarray, point_map: PointMap) -> np.ndarray:
    """``x1, y1, x2, y2`` of each row moved by ``point_map`` (back to the frame, or forward into what the model
    saw): the box around where its four corners land, since rotations swap them."""
    if not len(rows):
        return rows
    x1, y1, x2, y2 = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)
    back = point_map(corners.reshape(-1, 2)).reshape(-1, 4, 2)
    out = rows.copy()
    out[:, 0:2] = back.min(axis=1)
    out[:, 2:4] = back.max(axis=1)
    return out
