"""The generated street scene as a source: no camera, file or network needed."""

from __future__ import annotations

import numpy as np

from pipeline.sources.base import RawFrame
from pipeline.synth.scene import StreetScene


class SyntheticSource:
    """``frames`` frames of a :class:`StreetScene`, deterministic per seed."""

    live = False

    def __init__(self, seed: int = 0, frames: int = 300, width: int = 640, height: int = 360, fps: float = 30.0):
        self.scene = StreetScene(seed, frames, width, height, fps)
        self.frames = frames
        self.total_frames = frames
        self.fps = fps
        self.description = f"synthetic scene (seed {seed})"
        self._index = 0
        self._interrupted = False

    def open(self) -> None:
        self._index = 0

    def render(self, index: int) -> np.ndarray:
        """The image at ``index`` (a pure function of seed and index)."""
        return self.scene.render(index).image

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
