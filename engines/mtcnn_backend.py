"""Face detection with the pretrained MTCNN of ``facenet-pytorch`` (its weights ship in the wheel: works offline).

Selected with ``--model mtcnn``. Detections are ``face`` boxes (class 0) with
MTCNN's probability as confidence, followed by its five landmarks (eyes, nose,
mouth corners) as ten extra columns ``x, y`` each, in source pixels.

``facenet-pytorch`` 2.5.3 pins an old torch in its metadata; install it with
``pip install --no-deps facenet-pytorch==2.5.3`` (it runs on current torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from engines.base import EngineInfo, FrameFormat, ModelSpec, ReadyDetections
from engines.errors import BackendUnavailable
from engines.yuv import PixelLayout, on_host

MODEL_NAME = "mtcnn"
LANDMARKS = 5
NAMES = {0: "face"}


class MtcnnDetector:
    """facenet-pytorch's ``MTCNN(keep_all=True)`` behind edgesight's engine interface."""

    def __init__(self, mtcnn: Any, info: EngineInfo, conf: float) -> None:
        self._mtcnn = mtcnn
        self.info = info
        self._conf = conf

    def prepare(self, image: np.ndarray, layout: PixelLayout = "bgr") -> np.ndarray:
        """BGR (or I420) frame → RGB, as facenet-pytorch expects."""
        return cv2.cvtColor(on_host(image), cv2.COLOR_YUV2RGB_I420 if layout == "i420" else cv2.COLOR_BGR2RGB)

    def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Per image, ``(N, 16)`` rows: ``x1, y1, x2, y2, probability, 0`` and five landmarks ``x, y``."""
        out: list[np.ndarray] = []
        for image in inputs:  # facenet-pytorch batches only same-sized images; frames are run one by one
            boxes, probs, points = self._mtcnn.detect(image, landmarks=True)
            out.append(self._rows(boxes, probs, points))
        return out

    def _rows(self, boxes: Any, probs: Any, points: Any) -> np.ndarray:
        if boxes is None:
            return np.zeros((0, 6 + 2 * LANDMARKS), np.float32)
        n = len(boxes)
        rows = np.concatenate(
            [
                np.asarray(boxes, np.float32).reshape(n, 4),
                np.asarray(probs, np.float32).reshape(n, 1),
                np.zeros((n, 1), np.float32),
                np.asarray(points, np.float32).reshape(n, 2 * LANDMARKS),
            ],
            axis=1,
        )
        return rows[rows[:, 4] > self._conf]

    def submit(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> ReadyDetections:
        return ReadyDetections(self.infer(inputs, source_shapes))

    def warmup(self, formats: Sequence[FrameFormat] = ()) -> None:
        """One blank frame: MTCNN's cost follows the image's size, so there is no per-shape set-up to warm."""
        self.infer([np.zeros((360, 640, 3), np.uint8)], [(360, 640)])

    def close(self) -> None:
        self._mtcnn = None


def load(spec: ModelSpec) -> MtcnnDetector:
    """Registry entry point for ``model: mtcnn`` (torch on CUDA when available and allowed, else the CPU)."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise BackendUnavailable(
            "model 'mtcnn' needs facenet-pytorch: pip install --no-deps facenet-pytorch==2.5.3"
        ) from exc
    from engines.torch_backend import select_device

    device = select_device(spec.device)
    mtcnn = MTCNN(keep_all=True, device=device)
    mtcnn.eval()
    info = EngineInfo(
        backend="mtcnn",
        device=str(device),
        precision="fp32",
        model=MODEL_NAME,
        task="face",
        imgsz=0,
        names=dict(NAMES),
        max_batch=1,
    )
    return MtcnnDetector(mtcnn, info, spec.conf)
