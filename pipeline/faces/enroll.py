"""Enrollment: the main face of each photo, embedded and stored under a name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import ConfigError, SourceError
from pipeline.faces.embedder import FaceEmbedder, largest
from pipeline.faces.gallery import FaceGallery

MIN_PROBABILITY = 0.9


def main_faces(paths: Sequence[Path], device: str = "cpu") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per photo, the RGB image and the box of its largest face (MTCNN); a photo without a face is an error."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device=device)
    out = []
    for path in paths:
        if not path.is_file():
            raise SourceError(f"image not found: '{path}'")
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise SourceError(f"cannot read image '{path}' (not an image, or corrupt)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes, probs = mtcnn.detect(rgb)
        if boxes is None or not (np.asarray(probs) >= MIN_PROBABILITY).any():
            raise ConfigError(f"no face found in '{path}'")
        boxes = np.asarray(boxes)[np.asarray(probs) >= MIN_PROBABILITY]
        out.append((rgb, boxes[largest(boxes)][None].astype(np.float32)))
    return out


def enroll(gallery: FaceGallery, name: str, paths: Sequence[Path], embedder: FaceEmbedder, device: str = "cpu") -> int:
    """Embed the main face of every photo in ``paths`` and store them for ``name``; all or nothing."""
    faces = main_faces(paths, device)
    vectors = np.concatenate([embedder.embed(rgb, box) for rgb, box in faces])
    return gallery.enroll(name, embedder.name, vectors, [str(p) for p in paths])
