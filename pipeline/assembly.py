"""Turning a validated config into the parts a pipeline is made of: the engine's spec, how many preprocess
threads, which frame formats to warm up on, the face detector, each stream's queue, capture thread and plan,
and the sinks; what :class:`~pipeline.runner.Pipeline` builds at start-up and when a stream is added, kept
apart from its lifecycle."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from engines.base import DetectionEngine, DeviceName, EngineInfo, FrameFormat, ModelSpec
from engines.registry import load_engine
from pipeline.analytics.stream import StreamAnalytics
from pipeline.analytics.tracking import TRACKER_LOW_CONF
from pipeline.config import FacesConfig, FileSourceConfig, PipelineConfig, SourceConfig, StreamConfig, UrlSourceConfig
from pipeline.errors import ConfigError
from pipeline.imageops import ImageOps, build_ops
from pipeline.media.packets import PacketRing
from pipeline.media.sink import EventMediaSink
from pipeline.media.store import EventStore
from pipeline.messages import CaptureItem
from pipeline.motion import MotionGate
from pipeline.privacy import can_redact
from pipeline.queues import BoundedQueue
from pipeline.recorder import FrameSink
from pipeline.sinks import BusSink, BusWriter, FaceSink, PictureSink, Redactor, ResultSink, SinkSet, Thumbnailer
from pipeline.sinks.mqtt import MqttSink
from pipeline.sinks.webhook import WebhookSink
from pipeline.sources import Source
from pipeline.sources.base import frame_format
from pipeline.stages import CaptureStage, FailureHandler, PreprocessStage
from pipeline.stages.base import Observe
from pipeline.stages.publish import StreamPlan

MAX_GPU_PREPROCESS_THREADS = 4
"""Preprocess threads on a GPU at most, by default (they only copy bytes; the letterbox runs in the batch)."""
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
    """``preprocess_threads``; by default one, and up to :data:`MAX_GPU_PREPROCESS_THREADS` on a GPU where a
    thread has real work: a file read as fast as it decodes, image operations or motion gating.

    With only live cameras a thread takes a frame only when the model's queue has room for it; several threads
    then race for that room and, past capacity, serve their shares of the cameras unevenly: measured at 132
    cameras on an H100, four threads gave p99 149 ms where one gave 105 ms, at the same throughput (a thread's
    work there is a few microseconds a frame).
    """
    if config.preprocess_threads:
        return min(config.preprocess_threads, len(config.streams))
    light = all(s.source.live and not s.preprocess and s.motion is None for s in config.streams)
    if engine.device.startswith("cuda") and not light:
        return min(len(config.streams), MAX_GPU_PREPROCESS_THREADS)
    return 1


def warmup_formats(streams: Sequence[StreamConfig], sources: Mapping[str, Source]) -> list[FrameFormat]:
    """The frame formats the model will see first: those of the opened sources whose frames reach it as they are
    (no image operations before it), most streams first, at most :data:`MAX_WARMUP_FORMATS`."""
    seen = Counter(
        fmt for stream in streams if not stream.preprocess and (fmt := frame_format(sources.get(stream.id))) is not None
    )
    return [fmt for fmt, _ in seen.most_common(MAX_WARMUP_FORMATS)]


def decoder_threads(streams: Sequence[StreamConfig], cores: int) -> int | None:
    """Threads for each CPU decoder that sets no ``decode_threads``: the box's cores shared among the streams
    decoded on the CPU, at least one each; ``None`` (FFmpeg's own choice, about one per core) for a lone one."""
    shared = sum(1 for s in streams if _cpu_decoded(s.source) and s.source.decode_threads is None)
    return max(1, cores // shared) if shared > 1 else None


def with_decoder_threads(source: SourceConfig, threads: int | None) -> SourceConfig:
    """``source`` with ``threads`` decoding threads when it is decoded on the CPU and sets none itself."""
    if threads is None or not _cpu_decoded(source) or source.decode_threads is not None:
        return source
    return source.model_copy(update={"decode_threads": threads})


def _cpu_decoded(source: SourceConfig) -> TypeGuard[FileSourceConfig | UrlSourceConfig]:
    """A file or stream that a CPU decoder may decode (not one that names NVDEC)."""
    return isinstance(source, (FileSourceConfig, UrlSourceConfig)) and source.decoder != "nvdec"


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


@dataclass(frozen=True, slots=True)
class StreamParts:
    """What one stream adds to a pipeline: its capture queue and thread, its image operations and motion gate."""

    queue: BoundedQueue[CaptureItem]
    capture: CaptureStage
    image_ops: ImageOps | None
    motion: MotionGate | None


def build_stream(
    stream: StreamConfig,
    source: Source,
    worker: PreprocessStage,
    stop: threading.Event,
    on_failure: FailureHandler,
    observe: Observe | None = None,
) -> StreamParts:
    """One stream's parts, joined to the preprocess thread ``worker`` that reads it: the same for a stream
    configured at start-up and one added at run time (whose capture thread the caller starts)."""
    queue: BoundedQueue[CaptureItem] = BoundedQueue(
        f"capture.{stream.id}", stream.capacity, stream.policy, stop, worker.inputs.ready
    )
    queue.expect(stream.id)  # its drop counts are series from 0
    ops = build_ops(stream.preprocess) if stream.preprocess else None
    if ops is not None:
        worker.image_ops[stream.id] = ops
    gate = MotionGate(stream.motion) if stream.motion is not None and stream.motion.enabled else None
    if gate is not None:
        worker.motion[stream.id] = gate
    worker.inputs.add(queue)
    capture = CaptureStage(stream.id, source, queue, stop, on_failure, stream.max_frames, observe)
    return StreamParts(queue, capture, ops, gate)


def stream_plan(config: PipelineConfig, stream: StreamConfig) -> StreamPlan:
    """What the publish stage does with a stream's frames before its sinks: analytics when tracking is on, and
    the stream's redaction."""
    analytics = None
    if config.tracking.enabled:
        analytics = StreamAnalytics(stream, config.tracking, config.events, config.model.conf)
    return StreamPlan(stream.id, stream.privacy, analytics)


def media_sink(
    config: PipelineConfig,
    store: EventStore,
    redactor: Redactor,
    packets: Mapping[str, PacketRing],
    names: dict[int, str],
    faces: bool,
) -> EventMediaSink:
    """The event store's sink: snapshots and clips of redacted frames; a stream's clips are its camera's own
    packets (``packets``) only where its privacy settings can hide nothing (the model's classes ``names``, a face
    thread when ``faces``)."""
    streams = {s.id: s for s in config.streams}

    def live(stream_id: str) -> bool:
        stream = streams.get(stream_id)
        return stream is None or stream.source.live

    def camera(stream_id: str) -> PacketRing | None:
        stream = streams.get(stream_id)
        private = stream is None or can_redact(stream.privacy, names, faces)
        return None if private else packets.get(stream_id)

    return EventMediaSink(config.events, store, lambda p: redactor.picture(p).frame.host_image(), live, camera)


def build_sinks(
    config: PipelineConfig,
    writer: BusWriter,
    faces: FaceSink | None,
    pictures: Mapping[str, FrameSink],
    store: EventStore | None = None,
    packets: Mapping[str, PacketRing] | None = None,
    names: dict[int, str] | None = None,
) -> SinkSet:
    """The publish stage's sinks, in order: the face thread's side (its faces go out before a stream's closing
    events), the event store's (``store``: snapshots and clips), the bus, MQTT and the webhook where configured,
    then each consumer of redacted frames (``pictures``: a recording, the preview)."""
    redactor = Redactor(faces.recent_boxes if faces is not None else None)
    thumbnails = Thumbnailer(redactor, config.events.thumbnail_quality) if config.events.thumbnails else None
    bus = BusSink(writer, faces.annotations if faces is not None else None, thumbnails)
    sinks: list[ResultSink] = [faces] if faces is not None else []
    if store is not None:
        sinks.append(media_sink(config, store, redactor, packets or {}, names or {}, faces is not None))
    sinks.append(bus)
    if config.publish.mqtt is not None:
        sinks.append(MqttSink(config.publish.mqtt))
    if config.publish.webhook is not None:
        sinks.append(WebhookSink(config.publish.webhook))
    sinks += [PictureSink(name, frames, redactor) for name, frames in pictures.items()]
    return SinkSet(sinks)
