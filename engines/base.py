"""The backend interface every inference engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from engines.masks import InstanceMasks
from engines.yuv import PixelLayout

DeviceName = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "int8"]


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
    precision: Precision = "auto"
    """``auto``: fp16 on a GPU, fp32 on the CPU. ``int8`` needs TensorRT and ``calibration``."""
    threads: int | None = None
    """CPU threads for inference; ``None`` uses every core."""
    max_batch: int | None = None
    """The largest batch the engine is built and warmed up for (``None``: see :meth:`batch_limit`)."""
    streams: int = 1
    """How many streams will share the engine (sizes the default batch)."""
    cache_dir: Path | None = None
    """Where exported ONNX files and TensorRT engines are kept (``None``: the user cache directory)."""
    calibration: str | None = None
    """A folder of images or a video whose frames calibrate INT8."""
    calibration_frames: int = 256
    cuda_graphs: bool = True
    """Replay the torch CUDA model as CUDA graphs (one per input shape and batch bucket)."""
    workspace_gb: float = 4.0
    """TensorRT builder workspace."""

    def batch_limit(self, gpu: bool) -> int:
        """``max_batch``, or by default one frame per stream, and at least 8 on a GPU (at most 32).

        A GPU runs a batch of 8 in little more time than one frame, so even a
        single file stream is batched (consecutive frames) when frames queue up.
        """
        if self.max_batch is not None:
            return self.max_batch
        return min(32, max(8, self.streams) if gpu else self.streams)

    def gpu_precision(self) -> str:
        return "fp16" if self.precision == "auto" else self.precision


@dataclass(frozen=True, slots=True)
class FrameFormat:
    """The shape and pixel layout of a source's frames (see :mod:`engines.yuv`), known once it has opened."""

    shape: tuple[int, ...]
    layout: PixelLayout = "bgr"


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
    max_batch: int = 1
    cache: str | None = None
    """``hit`` when a cached engine was loaded, ``built`` when it was built now, ``None`` when nothing is cached."""
    artifact: str | None = None
    """The cached engine or export file, when there is one."""
    asynchronous: bool = False
    """``submit`` returns before the batch is computed (on a GPU), so the next batch can be collected meanwhile;
    otherwise ``submit`` computes it, and its results need not wait for the next batch."""

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "model": self.model,
            "task": self.task,
            "imgsz": self.imgsz,
            "max_batch": self.max_batch,
            "cache": self.cache,
            "fallback_reason": self.fallback_reason,
        }


class PendingDetections(Protocol):
    """A submitted batch; ``result`` waits for it and returns its detections.

    After ``result``, ``masks`` holds one :class:`~engines.masks.InstanceMasks`
    per image for a segmentation model (row for row), else ``None``.
    """

    @property
    def masks(self) -> Sequence[InstanceMasks] | None: ...

    @property
    def keypoints(self) -> Sequence[np.ndarray] | None:
        """Pose models, after ``result``: per image an ``(N, K, 3)`` array of ``x, y, confidence`` in source
        pixels."""

    def result(self) -> list[np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class ReadyDetections:
    """A batch whose detections were computed when it was submitted."""

    rows: list[np.ndarray]
    masks: Sequence[InstanceMasks] | None = None
    keypoints: Sequence[np.ndarray] | None = None

    def result(self) -> list[np.ndarray]:
        return self.rows


class DetectionEngine(Protocol):
    """A loaded detector.

    ``prepare`` runs in the preprocess stage (letterbox, layout, normalization)
    on a BGR frame, or a planar I420 one (``layout``, see :mod:`engines.yuv`),
    and returns an opaque model input; ``infer`` runs a batch of such inputs and
    returns, per image, an ``(N, 6)`` float array of ``x1, y1, x2, y2, confidence,
    class_id`` in the source image's pixels. A frame that is already a CUDA
    tensor must be finished: whatever made it (a decoder, image operations)
    has waited for that work, so ``prepare`` waits on nothing. ``submit`` is ``infer`` in two
    halves: it queues the batch on the device and returns at once, so the
    caller can collect and submit the next batch before reading this one's
    ``result()`` (which must be read in submission order).
    """

    info: EngineInfo

    def prepare(self, image: np.ndarray, layout: PixelLayout = "bgr") -> Any: ...

    def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]: ...

    def submit(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> PendingDetections: ...

    def warmup(self, formats: Sequence[FrameFormat] = ()) -> None:
        """Run blank frames of ``formats`` (a default when empty) before real ones arrive."""
        ...

    def close(self) -> None: ...
