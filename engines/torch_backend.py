"""PyTorch backend: Ultralytics weights on the CPU (fp32) or on CUDA (fp16, replayed as CUDA graphs).

Loading and layer fusion are Ultralytics' ``AutoBackend``. On CUDA, each
input shape and batch bucket is captured once as a CUDA graph and replayed, so
a batch costs one launch instead of hundreds and the infer thread does not sit
on the GIL issuing kernels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engines.base import EngineInfo, ModelSpec
from engines.capture_gate import GATE
from engines.detector import YoloDetector
from engines.errors import BackendUnavailable
from engines.weights import load_detection_module

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""Batches are padded up to one of these sizes, so a handful of graphs covers every batch."""
MAX_GRAPHS = 32
Forward = Callable[[torch.Tensor], torch.Tensor]
Outputs = tuple[torch.Tensor, ...]
Post = Callable[[torch.Tensor, tuple[int, ...]], Outputs]


def select_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is usable, else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA GPU is available to torch")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def model_outputs(out: Any) -> Outputs:
    """``(predictions,)``, or ``(predictions, prototypes)`` for a segmentation model, from a forward's result.

    Ultralytics modules return the predictions alone, or first in a list or
    tuple whose other members are training extras (a dict of head outputs);
    a segmentation head puts ``(predictions, prototypes)`` first.
    """
    if isinstance(out, torch.Tensor):
        return (out,)
    head = out[0]
    if isinstance(head, (list, tuple)):
        return (head[0], head[-1]) if head[-1].ndim == 4 else (head[0],)
    return (head,)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: Outputs
    keep_alive: tuple[Any, ...]
    """Tensors the model cached for this shape (anchors, strides) that the graph reads."""
    views: dict[int, tuple[torch.Tensor, Outputs]] = field(default_factory=dict)
    """Per batch size ``n``: the first ``n`` rows of the input and of each output, made once."""

    def rows(self, n: int) -> tuple[torch.Tensor, Outputs]:
        views = self.views.get(n)
        if views is None:
            views = self.views[n] = (self.static_in[:n], tuple(t[:n] for t in self.static_out))
        return views


class TorchRunner:
    """Eager forward on the CPU; eager or CUDA-graph forward on CUDA.

    On CUDA the detector also hands over its letterbox and candidate selection
    (:meth:`fuse`), and :meth:`run_frames` replays all three as one graph: a
    batch of raw uint8 frames in, the best anchors of each image out.
    """

    def __init__(self, model: Any, device: torch.device, fp16: bool, max_batch: int, cuda_graphs: bool) -> None:
        self.model = model
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.input_dtype = torch.float16 if fp16 else torch.float32
        self.max_batch = max_batch
        self.cuda_graphs = cuda_graphs and self.on_gpu
        self._graphs: dict[tuple[Any, ...], _Graph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._pre: Forward | None = None
        self._post: Post | None = None

    def fuse(self, pre: Forward, post: Post) -> None:
        """Run ``pre`` (frames → model input) and ``post`` (predictions and one frame's shape → what the host reads)
        around the model."""
        self._pre, self._post = pre, post

    def _fused(self, frames: torch.Tensor) -> Outputs:
        assert self._pre is not None and self._post is not None
        preds, *rest = model_outputs(self.model(self._pre(frames)))
        return (*self._post(preds, tuple(frames.shape[1:])), *rest)

    def run_frames(self, frames: Sequence[torch.Tensor]) -> Outputs:
        """``post``'s outputs (and prototypes) for same-shaped uint8 frames on the GPU (see :meth:`fuse`), stacked
        straight into the graph's input."""
        if not self.cuda_graphs:
            return self._fused(torch.stack(list(frames)))
        first = frames[0]
        return self._replay(("frames", *first.shape), len(frames), first.dtype, frames, self._fused)

    def forward(self, batch: Any) -> Outputs:
        if not self.on_gpu:
            x = torch.from_numpy(np.ascontiguousarray(batch)).float().div_(255)
            return model_outputs(self.model(x))
        if not self.cuda_graphs:
            return model_outputs(self.model(batch))
        kind = ("input", *batch.shape[1:])
        return self._replay(kind, int(batch.shape[0]), batch.dtype, batch, lambda x: model_outputs(self.model(x)))

    def _replay(
        self,
        kind: tuple[Any, ...],
        n: int,
        dtype: torch.dtype,
        batch: torch.Tensor | Sequence[torch.Tensor],
        fn: Callable[[torch.Tensor], Outputs],
    ) -> Outputs:
        """Replay ``fn``'s graph for ``n`` items of ``kind``'s shape: ``batch`` is one tensor, or the items."""
        bucket = next((b for b in BATCH_BUCKETS if b >= n), n)
        key = (*kind, bucket)
        graph = self._graphs.pop(key, None)  # re-inserted below: the least recently replayed goes first when full
        if graph is None:
            graph = self._capture(key, (bucket, *kind[1:]), dtype, fn)
        self._graphs[key] = graph
        static_in, outputs = graph.rows(n)
        if isinstance(batch, torch.Tensor):
            static_in.copy_(batch)
        else:
            torch.stack(list(batch), out=static_in)
        graph.graph.replay()
        return outputs

    def _capture(
        self,
        key: tuple[Any, ...],
        shape: tuple[int, ...],
        dtype: torch.dtype,
        fn: Callable[[torch.Tensor], Outputs],
    ) -> _Graph:
        if len(self._graphs) >= MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs)))
        static_in = torch.zeros(shape, dtype=dtype, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph: cuDNN picks kernels, the head caches its anchors
                fn(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Graphs replay one at a time, so they share memory. "thread_local": the preprocess threads keep
        # uploading frames on their own streams while a new shape is captured here. Not torch.cuda.graph():
        # it empties torch's device and pinned-host caches before each capture, which took 1.5-2 s with
        # 64 cameras' buffers cached on an H200 box and held up every CUDA thread meanwhile.
        # Under the capture gate: hardware decoders in other threads synchronize in ways a capture cannot survive.
        with GATE.capture(), torch.cuda.stream(side):
            graph.capture_begin(self._pool, capture_error_mode="thread_local")
            try:
                static_out = fn(static_in)
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(side)
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
        task=loaded.task,
        imgsz=spec.imgsz,
        names=names,
        max_batch=max_batch,
        asynchronous=device.type == "cuda",
    )
    kpt = getattr(loaded.module, "kpt_shape", None) if loaded.task == "pose" else None
    return YoloDetector(
        runner,
        info,
        spec,
        stride=int(model.stride),
        nc=len(names),
        end2end=bool(getattr(model, "end2end", False)),
        kpt_shape=(int(kpt[0]), int(kpt[1])) if kpt is not None else None,
    )
