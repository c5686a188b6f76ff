"""PyTorch backend: Ultralytics weights on the CPU (fp32) or on CUDA (fp16, replayed as CUDA graphs).

Loading and layer fusion are Ultralytics' ``AutoBackend``. On CUDA, each
input shape and batch bucket is captured once as a CUDA graph and replayed, so
a batch costs one launch instead of hundreds and the infer thread does not sit
on the GIL issuing kernels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision  # noqa: F401  (torchvision's NMS kernel, used by the shared post-processing)

from engines.base import EngineInfo, ModelSpec
from engines.detector import YoloDetector
from engines.weights import load_detection_module
from pipeline.errors import BackendUnavailable

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""Batches are padded up to one of these sizes, so a handful of graphs covers every batch."""
MAX_GRAPHS = 32


def select_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is usable, else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA GPU is available to torch")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: torch.Tensor
    keep_alive: tuple[Any, ...]
    """Tensors the model cached for this shape (anchors, strides) that the graph reads."""


class TorchRunner:
    """Eager forward on the CPU; eager or CUDA-graph forward on CUDA."""

    def __init__(self, model: Any, device: torch.device, fp16: bool, max_batch: int, cuda_graphs: bool) -> None:
        self.model = model
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.input_dtype = torch.float16 if fp16 else torch.float32
        self.max_batch = max_batch
        self.cuda_graphs = cuda_graphs and self.on_gpu
        self._graphs: dict[tuple[int, ...], _Graph] = {}

    def forward(self, batch: Any) -> torch.Tensor:
        if not self.on_gpu:
            x = torch.from_numpy(np.ascontiguousarray(batch)).float().div_(255)
            return _first(self.model(x))
        if not self.cuda_graphs:
            return _first(self.model(batch))
        n = int(batch.shape[0])
        bucket = next((b for b in BATCH_BUCKETS if b >= n), n)
        key = (bucket, *batch.shape[1:])
        graph = self._graphs.get(key) or self._capture(key)
        graph.static_in[:n].copy_(batch)
        graph.graph.replay()
        return graph.static_out[:n]

    def _capture(self, key: tuple[int, ...]) -> _Graph:
        if len(self._graphs) >= MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs)))
        static_in = torch.zeros(key, dtype=self.input_dtype, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph: cuDNN picks kernels, the head caches its anchors
                self.model(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = _first(self.model(static_in))
        head = self.model.model.model[-1] if hasattr(self.model, "model") else None
        keep = tuple(getattr(head, name) for name in ("anchors", "strides") if hasattr(head, name))
        record = _Graph(graph, static_in, static_out, keep)
        self._graphs[key] = record
        log.debug("captured a CUDA graph for input %s", key)
        return record

    def close(self) -> None:
        self._graphs.clear()
        self.model = None


def load(spec: ModelSpec) -> YoloDetector:
    """Registry entry point."""
    from ultralytics.nn.autobackend import AutoBackend

    device = select_device(spec.device)
    if device.type == "cpu":
        # Ultralytics caps torch at one thread (OMP_NUM_THREADS=1) on import; inference is the pipeline's
        # heaviest stage, so it gets every core unless configured otherwise.
        torch.set_num_threads(spec.threads or os.cpu_count() or 1)
        if spec.precision not in ("auto", "fp32"):
            raise BackendUnavailable(f"torch on the CPU runs fp32 only, not {spec.precision}")
    elif spec.gpu_precision() == "int8":
        raise BackendUnavailable("torch does not run int8; int8 needs TensorRT")
    fp16 = device.type == "cuda" and spec.gpu_precision() == "fp16"
    loaded = load_detection_module(spec.model, spec.fallback_model)
    model = AutoBackend(model=loaded.module, device=device, fp16=fp16, fuse=True, verbose=False)
    model.eval()
    names = {int(k): str(v) for k, v in model.names.items()}
    max_batch = spec.batch_limit(gpu=device.type == "cuda")
    runner = TorchRunner(model, device, bool(model.fp16), max_batch, spec.cuda_graphs)
    info = EngineInfo(
        backend="torch",
        device=str(device),
        precision="fp16" if model.fp16 else "fp32",
        model=loaded.name,
        task="detect",
        imgsz=spec.imgsz,
        names=names,
        max_batch=max_batch,
    )
    return YoloDetector(
        runner, info, spec, stride=int(model.stride), nc=len(names), end2end=bool(getattr(model, "end2end", False))
    )
