"""A folder of still images, read in name order as one stream."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from pipeline.errors import SourceError
from pipeline.sources.base import RawFrame
from pipeline.sources.video import to_bgr

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class ImageFolderSource:
    """Every image file in a folder (sorted by name); unreadable files are logged and skipped."""

    live = False

    def __init__(self, folder: str | Path, fps: float = 30.0) -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.description = f"image folder '{self.folder}'"
        self._files: list[Path] = []
        self._next = 0
        self._interrupted = False
        self.skipped = 0

    @property
    def total_frames(self) -> int:
        return len(self._files)

    def open(self) -> None:
        if not self.folder.exists():
            raise SourceError(f"image folder not found: '{self.folder}'")
        if not self.folder.is_dir():
            raise SourceError(f"not a folder: '{self.folder}'")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"no images in folder '{self.folder}' (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")

    def read(self) -> RawFrame | None:
        while not self._interrupted and self._next < len(self._files):
            path = self._files[self._next]
            index = self._next
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                self.skipped += 1
                log.warning("skipping unreadable image '%s'", path)
                continue
            return RawFrame(to_bgr(image, f"image '{path}'"), index * 1000.0 / self.fps)
        return None

    def release(self) -> None:
        self._files = []

    def interrupt(self) -> None:
        self._interrupted = True
