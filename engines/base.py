"""The backend interface every inference engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

DeviceName = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What to load and how to post-process it."""

    model: str
    fallback_model: str | None = None
    """Loaded instead of ``model`` when ``model`` cannot be downloaded (only for a default the user did not pick)."""
    imgsz: int = 640
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: tuple[int, ...] | None = None
    agnostic_nms: bool = False
    device: DeviceName = "auto"
    half: bool | None = None
    """fp16 on CUDA when ``None`` (default); always fp32 on CPU."""
    threads: int | None = None
    """CPU threads for inference; ``None`` uses every core."""


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What was loaded, for logs and the first status message."""

    backend: str
    device: str
    precision: str
    model: str
    task: str
    imgsz: int
    names: dict[int, str] = field(repr=False)
    fallback_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "model": self.model,
            "task": self.task,
            "imgsz": self.imgsz,
            "fallback_reason": self.fallback_reason,
        }


class DetectionEngine(Protocol):
    """A loaded detector.

    ``prepare`` runs in the preprocess stage (letterbox, layout, normalization)
    and returns an opaque model input; ``infer`` runs a batch of such inputs and
    returns, per image, an ``(N, 6)`` float array of ``x1, y1, x2, y2, confidence,
    class_id`` in the source image's pixels.
    """

    info: EngineInfo

    def prepare(self, image: np.ndarray) -> Any: ...

    def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...
