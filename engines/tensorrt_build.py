"""Compiling an ONNX model into a serialized TensorRT engine (TensorRT 10 API; 11 removed parts of it).

FP16, or INT8 calibrated on real frames; one optimization profile for batch
1…N at a fixed input shape; build progress reported through TensorRT's
progress monitor (a build takes minutes on an edge box).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import ModelError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True, slots=True)
class BuildSettings:
    precision: str
    """``fp16``, ``fp32`` or ``int8``."""
    min_batch: int
    opt_batch: int
    max_batch: int
    input_hw: tuple[int, int]
    workspace_gb: float = 4.0
    calibration: str | None = None
    calibration_frames: int = 256
    calibration_cache: Path | None = None


def calibration_frames(where: str, count: int) -> Iterator[np.ndarray]:
    """Up to ``count`` BGR frames from a folder of images or a video file (spread evenly over a video)."""
    import cv2

    path = Path(where).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ModelError(f"int8 calibration: no images in '{where}'")
        for file in files[:count]:
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is not None:
                yield image
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ModelError(f"int8 calibration: cannot open '{where}' (a folder of images or a video file)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    step = max(1, total // count)
    index = 0
    try:
        while index < count * step:
            ok, image = cap.read()
            if not ok:
                break
            if index % step == 0:
                yield image
            index += 1
    finally:
        cap.release()


def _make_progress_monitor(trt: Any) -> Any:
    """A ``trt.IProgressMonitor`` that logs each build phase and its steps at most every few seconds."""

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._last = 0.0
            self._started = time.monotonic()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                log.info("building TensorRT engine: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            if now - self._last > 5.0:
                self._last = now
                log.info("building TensorRT engine: %s step %d (%.0f s so far)", phase_name, step, now - self._started)
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Progress()


def _make_calibrator(trt: Any, settings: BuildSettings, imgsz: int, stride: int) -> tuple[Any, int]:
    """An entropy calibrator fed with letterboxed frames from ``settings.calibration``, and its batch size."""
    import torch

    from engines.letterbox import CpuLetterbox

    if not settings.calibration:
        raise ModelError("precision int8 needs model.calibration: a folder of images or a video from your cameras")
    letterbox = CpuLetterbox(imgsz, stride, auto=False)
    frames = [letterbox(f) for f in calibration_frames(settings.calibration, settings.calibration_frames)]
    if not frames:
        raise ModelError(f"int8 calibration: no frames could be read from '{settings.calibration}'")
    batch = min(settings.opt_batch, len(frames))
    cache_file = settings.calibration_cache

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._next = 0
            self._device_batch: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._next + batch > len(frames):
                return None
            chunk = np.stack(frames[self._next : self._next + batch])
            self._next += batch
            tensor = torch.from_numpy(chunk).cuda().float().div_(255).contiguous()
            self._device_batch = tensor  # kept alive until the next call
            torch.cuda.current_stream().synchronize()  # TensorRT reads it on its own stream
            return [int(tensor.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file is not None and cache_file.is_file():
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                cache_file.write_bytes(bytes(cache))

    log.info("int8 calibration on %d frames from %s", len(frames), settings.calibration)
    return Calibrator(), batch


def build_engine(onnx_path: Path, dest: Path, settings: BuildSettings, *, imgsz: int, stride: int) -> None:
    """Parse ``onnx_path`` and write a serialized engine to ``dest``; raises :class:`ModelError` on failure."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX export: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    config.progress_monitor = _make_progress_monitor(trt)
    h, w = settings.input_hw
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (settings.min_batch, 3, h, w), (settings.opt_batch, 3, h, w), (settings.max_batch, 3, h, w))
    config.add_optimization_profile(profile)
    if settings.precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast fp16; the engine is built anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator, batch = _make_calibrator(trt, settings, imgsz, stride)
        # Calibration runs at its profile's opt shape: pin it to the calibrator's batch.
        calibration = builder.create_optimization_profile()
        calibration.set_shape(name, (batch, 3, h, w), (batch, 3, h, w), (batch, 3, h, w))
        config.set_calibration_profile(calibration)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError("TensorRT could not build an engine from the ONNX export (see the TensorRT log above)")
    dest.write_bytes(bytes(serialized))
    log.info("built TensorRT engine in %.0f s", time.monotonic() - started)
