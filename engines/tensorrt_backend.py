"""TensorRT backend: the model exported to ONNX, compiled once per GPU into a cached engine, run on torch tensors.

An engine is keyed by the model file's hash, the GPU's name and compute
capability, the TensorRT version, the precision, the input shape and the batch
range (see :func:`engine_key`); a matching cached engine loads in seconds, any
other is built (minutes, with progress in the log) and cached atomically.
Engines take a fixed ``imgsz × imgsz`` input, so frames are letterboxed to the
full square. At run time the engine's inputs and outputs are torch CUDA
tensors bound by address, enqueued on the infer thread's CUDA stream: no
extra copies, no pycuda.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engines.base import EngineInfo, ModelSpec
from engines.detector import YoloDetector, detector_for
from engines.engine_cache import CachedArtifact, CacheKey, EngineCache, default_cache_dir
from engines.errors import BackendUnavailable, ModelError
from engines.tensorrt_build import BuildSettings
from engines.weights import LoadedModel, file_sha256, load_detection_module

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    name: str
    compute_capability: str


def current_gpu() -> GpuIdentity:
    major, minor = torch.cuda.get_device_capability()
    return GpuIdentity(torch.cuda.get_device_name(), f"{major}.{minor}")


def engine_key(
    loaded: LoadedModel, gpu: GpuIdentity, trt_version: str, settings: BuildSettings, model_sha256: str
) -> CacheKey:
    """Everything that makes one engine unusable in place of another."""
    fields: dict[str, Any] = {
        "model_sha256": model_sha256,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "tensorrt": trt_version,
        "precision": settings.precision,
        "input_shape": [3, *settings.input_hw],
        "batch": [settings.min_batch, settings.opt_batch, settings.max_batch],
    }
    if settings.precision == "int8":
        fields["calibration"] = [str(settings.calibration), settings.calibration_frames]
    return CacheKey(Path(loaded.name).stem, ".engine", fields)


Builder = Callable[[Path], None]
"""Writes a serialized engine to the given path."""


def cached_engine(
    cache: EngineCache, key: CacheKey, build: Builder, deserialize: Callable[[bytes], Any]
) -> tuple[Any, CachedArtifact]:
    """Load the engine for ``key`` from the cache, or build and cache it.

    A cached file that is stale (see :class:`EngineCache`) or that TensorRT
    refuses to deserialize is removed and rebuilt once.
    """
    found = cache.lookup(key)
    if found is not None:
        engine = deserialize(found.path.read_bytes())
        if engine is not None:
            log.info("loaded cached TensorRT engine %s", found.path)
            return engine, found
        log.warning("cached TensorRT engine %s does not deserialize here; rebuilding it", found.path)
        cache.invalidate(key)
    log.info("no cached TensorRT engine for this model, GPU and settings; building %s", key.filename)
    stored = cache.store(key, build)
    engine = deserialize(stored.path.read_bytes())
    if engine is None:
        cache.invalidate(key)
        raise BackendUnavailable("TensorRT built an engine it cannot deserialize")
    return engine, stored


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.int8: torch.int8,
        trt.uint8: torch.uint8,
        trt.bool: torch.bool,
    }
    return table[dtype]


class TrtRunner:
    """Binds torch CUDA tensors to an engine's I/O by address and enqueues on the current CUDA stream."""

    on_gpu = True

    def __init__(self, trt: Any, engine: Any, logger: Any, max_batch: int) -> None:
        self._logger = logger  # TensorRT needs its logger to outlive the engine
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable("TensorRT could not create an execution context (GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelError(f"expected an engine with one input, found {inputs}")
        self._input = inputs[0]
        self._outputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._out_dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in self._outputs}
        self.input_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._input))
        self.max_batch = max_batch
        self._buffers: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx = self.context
        batch = batch.to(self.input_dtype).contiguous()
        if not ctx.set_input_shape(self._input, tuple(batch.shape)):
            raise RuntimeError(f"input {tuple(batch.shape)} is outside the engine's profile (batch 1-{self.max_batch})")
        ctx.set_tensor_address(self._input, batch.data_ptr())
        outputs = []
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            buf = self._buffers.get((name, shape))
            if buf is None:
                buf = torch.empty(shape, dtype=self._out_dtypes[name], device="cuda")
                self._buffers[(name, shape)] = buf
            ctx.set_tensor_address(name, buf.data_ptr())
            outputs.append(buf)
        if not ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT failed to enqueue the batch")
        return tuple(outputs)  # output0 (predictions), then output1 (prototypes) for segmentation

    def close(self) -> None:
        self._buffers.clear()
        self.context = None
        self.engine = None


def load(spec: ModelSpec) -> YoloDetector:
    """Registry entry point."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not installed ({exc})") from exc
    if not trt.__version__.startswith("10."):
        raise BackendUnavailable(
            f"TensorRT 10 is needed, found {trt.__version__} (pip install 'tensorrt-cu12>=10,<11')"
        )
    if spec.device == "cpu" or not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs a CUDA GPU")
    precision = spec.gpu_precision()
    loaded = load_detection_module(spec.model, spec.fallback_model)
    module = loaded.module
    stride = max(int(module.stride.max()), 32)
    cache_dir = spec.cache_dir or default_cache_dir()
    settings = BuildSettings(
        precision=precision,
        min_batch=1,
        opt_batch=spec.batch_limit(gpu=True),
        max_batch=spec.batch_limit(gpu=True),
        input_hw=(spec.imgsz, spec.imgsz),
        workspace_gb=spec.workspace_gb,
        calibration=spec.calibration,
        calibration_frames=spec.calibration_frames,
    )
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine, artifact = _engine_for(trt, loaded, settings, cache_dir, runtime, stride, spec.imgsz)
    device = f"cuda:{torch.cuda.current_device()}"
    runner = TrtRunner(trt, engine, logger, settings.max_batch)
    return detector_for(
        runner,
        loaded,
        spec,
        backend="tensorrt",
        device=device,
        precision=precision,
        artifact=artifact,
        fixed_shape=True,
    )


def _engine_for(
    trt: Any,
    loaded: LoadedModel,
    settings: BuildSettings,
    cache_dir: Path,
    runtime: Any,
    stride: int,
    imgsz: int,
) -> tuple[Any, CachedArtifact | None]:
    from engines.onnx_export import export_onnx
    from engines.tensorrt_build import build_engine

    def build(dest: Path) -> None:
        onnx_path, cached_onnx = export_onnx(loaded, cache_dir, dynamic=True, imgsz=imgsz)
        try:
            build_engine(onnx_path, dest, settings, imgsz=imgsz, stride=stride)
        finally:
            if cached_onnx is None:
                shutil.rmtree(onnx_path.parent, ignore_errors=True)

    if loaded.path is None:  # random weights: nothing to key a cache on; build for this run only
        log.warning("model '%s' has no weights file: its TensorRT engine is built for this run only", loaded.name)
        tmp = cache_dir / f".uncached-{Path(loaded.name).stem}.engine"
        cache_dir.mkdir(parents=True, exist_ok=True)
        build(tmp)
        try:
            engine = runtime.deserialize_cuda_engine(tmp.read_bytes())
        finally:
            tmp.unlink(missing_ok=True)
        if engine is None:
            raise BackendUnavailable("TensorRT built an engine it cannot deserialize")
        return engine, None
    key = engine_key(loaded, current_gpu(), trt.__version__, settings, file_sha256(loaded.path))
    if settings.precision == "int8":
        settings = replace(settings, calibration_cache=cache_dir / f"{key.filename}.calib")
    return cached_engine(EngineCache(cache_dir), key, build, runtime.deserialize_cuda_engine)


def build_only(spec: ModelSpec) -> EngineInfo:
    """Build (or find) the cached engine for ``spec`` and release it: ``edgesight build-engine``."""
    detector = load(spec)
    detector.close()
    return detector.info
