"""A generated scene: coloured objects moving over a textured background.

Needs no camera, file or network, so ``edgesight demo`` and tests run anywhere.
Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.sources.base import RawFrame


@dataclass(frozen=True, slots=True)
class _Mover:
    x: float
    y: float
    vx: float
    w: float
    h: float
    colour: tuple[int, ...]


class SyntheticSource:
    """``frames`` frames of ``width``×``height`` with a handful of moving shapes."""

    live = False

    def __init__(self, seed: int = 0, frames: int = 300, width: int = 640, height: int = 360, fps: float = 30.0):
        self.seed = seed
        self.frames = frames
        self.width = width
        self.height = height
        self.fps = fps
        self.description = f"synthetic scene (seed {seed})"
        self._index = 0
        self._interrupted = False
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        texture = 90 + 25 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 6, (height, width))
        self._background = np.clip(np.stack([texture, texture * 0.95, texture * 0.9], axis=-1), 0, 255).astype(np.uint8)
        n = int(rng.integers(3, 7))
        self._objects = [
            _Mover(
                x=float(rng.uniform(0, width)),
                y=float(rng.uniform(0.2 * height, 0.8 * height)),
                vx=float(rng.choice([-1, 1]) * rng.uniform(1.5, 5.0)),
                w=float(rng.uniform(0.05, 0.18) * width),
                h=float(rng.uniform(0.1, 0.3) * height),
                colour=tuple(int(c) for c in rng.integers(30, 250, 3)),
            )
            for _ in range(n)
        ]
        self._rng = np.random.default_rng(seed + 1)

    def open(self) -> None:
        self._index = 0

    def render(self, index: int) -> np.ndarray:
        """The frame at ``index`` (pure function of seed and index)."""
        image = self._background.copy()
        for obj in self._objects:
            span = self.width + obj.w
            x1 = int((obj.x + obj.vx * index) % span - obj.w)
            y1 = int(obj.y - obj.h / 2)
            x2, y2 = x1 + int(obj.w), y1 + int(obj.h)
            image[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = obj.colour
        noise = np.random.default_rng(self.seed * 100_003 + index).integers(-4, 5, image.shape, dtype=np.int16)
        return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    def read(self) -> RawFrame | None:
        if self._interrupted or self._index >= self.frames:
            return None
        image = self.render(self._index)
        pts = self._index * 1000.0 / self.fps
        self._index += 1
        return RawFrame(image, pts)

    def release(self) -> None:
        self._index = self.frames

    def interrupt(self) -> None:
        self._interrupted = True
