"""Turning a validated config into the parts a pipeline is made of: the engine's spec, how many preprocess
threads, which frame formats to warm up on, the face detector; what :class:`~pipeline.runner.Pipeline` builds
at start-up and when a stream is added, kept apart from its lifecycle."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from engines.base import DetectionEngine, DeviceName, EngineInfo, FrameFormat, ModelSpec
from engines.registry import load_engine
from pipeline.analytics.tracking import TRACKER_LOW_CONF
from pipeline.config import FacesConfig, PipelineConfig, StreamConfig
from pipeline.errors import ConfigError
from pipeline.sources import Source
from pipeline.sources.base import frame_format

MAX_GPU_PREPROCESS_THREADS = 4
"""Preprocess threads on a GPU at most (they only copy bytes; the letterbox runs in the batch)."""
MAX_WARMUP_FORMATS = 3
"""Frame formats the model is warmed up on at most (each costs start-up time, and a CUDA graph per batch size,
which leaves room in the graph cache for the shapes no warm-up foresaw)."""


def detector_conf(config: PipelineConfig) -> float:
    """The detector's own threshold: with tracking on, low-confidence boxes go to the tracker too.

    ByteTrack keeps a track through occlusion and blur by matching it to boxes
    under the publishing threshold; only boxes at or over ``model.conf`` are published.
    """
    if config.tracking.enabled:
        return min(config.model.conf, TRACKER_LOW_CONF)
    return config.model.conf


def model_spec(config: PipelineConfig) -> ModelSpec:
    """The engine's spec: the model config's, with the detector's own threshold (see :func:`detector_conf`)."""
    return config.model.spec(len(config.streams), detector_conf(config))


def preprocess_threads(config: PipelineConfig, engine: EngineInfo) -> int:
    """``preprocess_threads``, or one on the CPU and up to :data:`MAX_GPU_PREPROCESS_THREADS` on a GPU."""
    if config.preprocess_threads:
        return min(config.preprocess_threads, len(config.streams))
    if engine.device.startswith("cuda"):
        return min(len(config.streams), MAX_GPU_PREPROCESS_THREADS)
    return 1


def warmup_formats(streams: Sequence[StreamConfig], sources: Mapping[str, Source]) -> list[FrameFormat]:
    """The frame formats the model will see first: those of the opened sources whose frames reach it as they are
    (no image operations before it), most streams first, at most :data:`MAX_WARMUP_FORMATS`."""
    seen = Counter(
        fmt for stream in streams if not stream.preprocess and (fmt := frame_format(sources.get(stream.id))) is not None
    )
    return [fmt for fmt, _ in seen.most_common(MAX_WARMUP_FORMATS)]


def check_faces_model(faces: FacesConfig, engine: EngineInfo) -> None:
    """Refuse a ``faces`` config the main model cannot serve (it finds no faces, or no persons to search)."""
    names = set(engine.names.values())
    if faces.detector is None and "face" not in names:
        raise ConfigError(
            f"faces: model '{engine.model}' finds no faces (its labels: {', '.join(sorted(names))}); "
            "set faces.detector (e.g. mtcnn) or run a face model"
        )
    if faces.search == "persons" and "person" not in names:
        raise ConfigError(f"faces.search: persons needs a model that finds persons, not '{engine.model}'")


def face_detector_loader(faces: FacesConfig, device: DeviceName) -> Callable[[], DetectionEngine] | None:
    """Loads the separate face detector (``faces.detector``) on the face thread; ``None``: the main model's faces."""
    if faces.detector is None:
        return None
    spec = ModelSpec(model=faces.detector, conf=faces.conf, device=device, max_batch=1)
    return lambda: load_engine(spec, "auto")
