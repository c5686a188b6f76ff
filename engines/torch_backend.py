"""PyTorch backend: Ultralytics detection weights on CPU (fp32) or CUDA (fp16).

Loading, letterboxing and NMS are Ultralytics' own (``AutoBackend``,
``LetterBox``, ``non_max_suppression``, ``scale_boxes``), called directly so the
per-frame path skips the predictor's bookkeeping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision  # noqa: F401  (Ultralytics' NMS uses torchvision's C++ kernel only when it is imported)

from engines.base import EngineInfo, ModelSpec
from engines.weights import load_detection_module

log = logging.getLogger(__name__)


def select_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is usable, else the CPU."""
    from pipeline.errors import ModelError

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested, but no CUDA GPU is available (use --device cpu or auto)")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda:0")
    return torch.device("cpu")


class TorchDetector:
    """A YOLO detection model run eagerly by PyTorch."""

    def __init__(self, spec: ModelSpec) -> None:
        from ultralytics.data.augment import LetterBox
        from ultralytics.nn.autobackend import AutoBackend

        self.spec = spec
        self.device = select_device(spec.device)
        if self.device.type == "cpu":
            # Ultralytics caps torch at one thread (OMP_NUM_THREADS=1) on import; inference is the pipeline's
            # heaviest stage, so it gets every core unless configured otherwise.
            torch.set_num_threads(spec.threads or os.cpu_count() or 1)
        half = self.device.type == "cuda" and spec.half is not False
        module, name = load_detection_module(spec.model, spec.fallback_model)
        self._model = AutoBackend(model=module, device=self.device, fp16=half, fuse=True, verbose=False)
        self._model.eval()
        self._fp16 = bool(self._model.fp16)
        self._on_gpu = self.device.type == "cuda"
        self._end2end = bool(getattr(self._model, "end2end", False))
        self._letterbox = LetterBox(spec.imgsz, auto=True, stride=int(self._model.stride))
        names = {int(k): str(v) for k, v in self._model.names.items()}
        self.info = EngineInfo(
            backend="torch",
            device=str(self.device),
            precision="fp16" if self._fp16 else "fp32",
            model=name,
            task="detect",
            imgsz=spec.imgsz,
            names=names,
        )

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Letterbox a BGR image for the model.

        On the CPU this returns a contiguous RGB ``(3, H, W)`` uint8 array, built
        with NumPy only: torch ops here would start a second OpenMP team beside the
        infer thread's and the two would fight for the cores. On CUDA it returns
        the letterboxed ``(H, W, 3)`` BGR image as is; layout and colour order are
        changed on the GPU after a single uint8 upload.
        """
        boxed: np.ndarray = self._letterbox(image=image)  # type: ignore[assignment]
        if self._on_gpu:
            return boxed
        return np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))

    def _to_model_input(self, inputs: Sequence[np.ndarray]) -> torch.Tensor:
        host = torch.from_numpy(inputs[0][None] if len(inputs) == 1 else np.stack(inputs))
        tensor = host.to(self.device, non_blocking=True)
        if self._on_gpu:
            tensor = tensor.permute(0, 3, 1, 2).contiguous().flip(1)  # BHWC BGR -> BCHW RGB
        return (tensor.half() if self._fp16 else tensor.float()).div_(255)

    @torch.inference_mode()
    def infer(self, inputs: Sequence[np.ndarray], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        from ultralytics.utils import nms, ops

        if len({t.shape for t in inputs}) != 1:
            # Letterboxed shapes differ (different source sizes): run them one by one.
            return [self.infer([t], [s])[0] for t, s in zip(inputs, source_shapes, strict=True)]
        batch = self._to_model_input(inputs)
        preds = self._model(batch)
        spec = self.spec
        kept = nms.non_max_suppression(
            preds,
            spec.conf,
            spec.iou,
            list(spec.classes) if spec.classes is not None else None,
            spec.agnostic_nms,
            max_det=spec.max_det,
            nc=0,
            end2end=self._end2end,
        )
        out = []
        for det, shape in zip(kept, source_shapes, strict=True):
            det[:, :4] = ops.scale_boxes((int(batch.shape[2]), int(batch.shape[3])), det[:, :4], shape)
            out.append(det[:, :6].float().cpu().numpy())
        return out

    def warmup(self) -> None:
        """Two forward passes on a blank image so the first real frame is not slow."""
        shape = (self.spec.imgsz * 9 // 16, self.spec.imgsz)
        blank = np.zeros((*shape, 3), dtype=np.uint8)
        for _ in range(2):
            self.infer([self.prepare(blank)], [shape])

    def close(self) -> None:
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TorchDetector({self.info.model}, {self.info.device}, {self.info.precision})"


def load(spec: ModelSpec) -> Any:
    """Registry entry point."""
    return TorchDetector(spec)
