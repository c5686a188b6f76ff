"""ONNX Runtime backend: the model exported once to ONNX (dynamic batch and shape), run by ONNX Runtime.

On the CPU this is the fast path: ONNX Runtime's fused kernels beat eager
PyTorch on small cores. With a GPU build of ONNX Runtime the CUDA execution
provider is used when the device is CUDA.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import numpy as np
import torch

from engines.base import ModelSpec
from engines.detector import YoloDetector, detector_for
from engines.engine_cache import default_cache_dir
from engines.errors import BackendUnavailable
from engines.onnx_export import export_onnx
from engines.weights import load_detection_module

log = logging.getLogger(__name__)


def _providers(ort: Any, device: str) -> tuple[list[str], str]:
    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailable("this ONNX Runtime build has no CUDA execution provider")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda:0"
    return ["CPUExecutionProvider"], "cpu"


class OrtRunner:
    """Runs a uint8 ``(B, 3, H, W)`` batch through an ONNX Runtime session (input normalized here)."""

    on_gpu = False
    input_dtype = torch.float32

    def __init__(self, session: Any, max_batch: int) -> None:
        self.session = session
        self.max_batch = max_batch
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]  # predictions, then prototypes (segmentation)

    def forward(self, batch: Any) -> tuple[torch.Tensor, ...]:
        x = np.multiply(batch, np.float32(1 / 255), dtype=np.float32)
        return tuple(torch.from_numpy(out) for out in self.session.run(self._outputs, {self._input: x}))

    def close(self) -> None:
        self.session = None


def load(spec: ModelSpec) -> YoloDetector:
    """Registry entry point."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc}; pip install onnxruntime)") from exc
    device = "cuda" if spec.device == "cuda" else "cpu"
    providers, device_name = _providers(ort, device)
    if spec.precision not in ("auto", "fp32"):
        raise BackendUnavailable(f"the ONNX Runtime backend runs fp32 only, not {spec.precision}")
    loaded = load_detection_module(spec.model, spec.fallback_model)
    onnx_path, cached = export_onnx(loaded, spec.cache_dir or default_cache_dir(), dynamic=True, imgsz=spec.imgsz)
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as exc:
        reason = f"ONNX Runtime cannot load the export of '{loaded.name}': {exc}".split("\n")[0]
        raise BackendUnavailable(reason) from exc
    finally:
        if cached is None:  # an uncached export (architecture) lives in its own temp dir
            shutil.rmtree(onnx_path.parent, ignore_errors=True)
    runner = OrtRunner(session, spec.batch_limit(gpu=False))
    return detector_for(
        runner, loaded, spec, backend="onnxruntime", device=device_name, precision="fp32", artifact=cached
    )
