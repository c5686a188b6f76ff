"""Building a pipeline's queues and stage threads from its config, into its :class:`~pipeline.parts.Parts`: at
start-up for every stream, and for one stream added at run time, by the same code. The lifecycle (start, stop,
add, remove) stays in :mod:`pipeline.runner`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future

from engines.base import DetectionEngine, EngineInfo, FrameFormat, ModelSpec
from pipeline.assembly import (
    build_sinks,
    build_stream,
    check_faces_model,
    face_detector_loader,
    model_spec,
    preprocess_threads,
    stream_plan,
)
from pipeline.bus import BusPublisher
from pipeline.config import PipelineConfig, StreamConfig
from pipeline.faces.messages import FaceJob, FaceResult
from pipeline.faces.stage import FaceStage, load_recognizer
from pipeline.messages import MaskFormat, PreparedItem, ResultItem
from pipeline.parts import Parts
from pipeline.queues import BoundedQueue, FanIn, OverflowPolicy, StreamCount
from pipeline.recorder import FrameSink
from pipeline.sinks import BusWriter, FaceSink
from pipeline.sources import Source
from pipeline.stages import CaptureStage, FailureHandler, InferStage, PreprocessStage, PublishStage, StreamAdded
from pipeline.stages.base import Observe
from pipeline.supervision import StateChange

log = logging.getLogger(__name__)

EngineFactory = Callable[[ModelSpec, str], DetectionEngine]


class StageBuilder:
    """Makes the queues and stages of one pipeline and keeps them in ``parts``."""

    def __init__(
        self,
        config: PipelineConfig,
        parts: Parts,
        stop: threading.Event,
        on_failure: FailureHandler,
        state_changes: BoundedQueue[StateChange | StreamAdded],
        observer: Callable[[str], Observe | None] = lambda kind: None,
    ) -> None:
        """``observer``: for a kind of stage, what its stages are made with to report their time (metrics)."""
        self.config = config
        self.observer = observer
        self.parts = parts
        self.stop = stop
        self.on_failure = on_failure
        self.state_changes = state_changes
        size = config.queue_size
        self.prepared: BoundedQueue[PreparedItem] = BoundedQueue("prepared", size, OverflowPolicy.BLOCK, stop)
        self.results: BoundedQueue[ResultItem] = BoundedQueue("results", size, OverflowPolicy.BLOCK, stop)
        parts.queues = [self.prepared, self.results, state_changes]

    @property
    def open_ended(self) -> bool:
        """Streams come and go at run time (``control.endpoint``): stages run until stopped."""
        return self.config.control.endpoint is not None

    def streams(self, n: int) -> StreamCount:
        return StreamCount(n, open_ended=self.open_ended)

    def launch_engine(self, factory: EngineFactory) -> tuple[InferStage, Future[list[FrameFormat]]]:
        """Start the infer thread, which loads the engine while the sources open, then warms it up on the frame
        formats set in the future it returns (or gives the engine up when that future holds an error)."""
        cfg = self.config
        spec = model_spec(cfg)
        formats: Future[list[FrameFormat]] = Future()
        infer = InferStage(
            self.prepared,
            self.results,
            self.streams(len(cfg.streams)),
            self.stop,
            self.on_failure,
            lambda: factory(spec, cfg.model.engine),
            cfg.model.classes,
            cfg.model.batch_timeout_ms / 1000.0,
            formats.result,
            observe=self.observer("infer"),
            reuses=self.parts.motion_gates,
        )
        infer.start()
        return infer, formats

    def size_queues(self, info: EngineInfo) -> None:
        """Two batches between preprocess, infer and publish; with only live cameras, one before infer."""
        cfg = self.config
        for q in (self.prepared, self.results):
            q.maxsize = max(cfg.queue_size, 2 * info.max_batch)
        if all(stream.source.live for stream in cfg.streams):
            # Live cameras: one batch waits while one runs, so a frame waits at most a pass before its own; the
            # cameras' newer frames replace older ones in their capture queues meanwhile (preprocess takes a frame
            # only when there is room here).
            self.prepared.maxsize = max(1, info.max_batch)

    def load_faces(self, engine: EngineInfo) -> None:
        """Load the face thread's models (``faces`` config), when there is one."""
        faces, device = self.config.faces, self.config.model.device
        if faces is None:
            return
        check_faces_model(faces, engine)
        jobs: BoundedQueue[FaceJob] = BoundedQueue("faces.jobs", 1, OverflowPolicy.DROP_OLDEST, self.stop)
        results: BoundedQueue[FaceResult] = BoundedQueue("faces.results", 64, OverflowPolicy.BLOCK, self.stop)
        stage = FaceStage(
            jobs,
            results,
            faces,
            self.stop,
            self.on_failure,
            detector=face_detector_loader(faces, device),
            recognizer=(lambda: load_recognizer(faces, device)) if faces.recognize else None,
            observe=self.observer("faces"),
        )
        stage.load()
        self.parts.faces = stage
        self.parts.queues += [jobs, results]

    def build_stages(
        self,
        engine: DetectionEngine,
        bus: BusPublisher,
        pictures: Mapping[str, FrameSink],
        on_latency: Callable[[str, float], None] | None,
    ) -> None:
        """Preprocess threads, every configured stream's parts, secondary models and the publish stage with its
        sinks (``pictures``: consumers of redacted frames, a recording and the preview)."""
        cfg, parts = self.config, self.parts
        workers = preprocess_threads(cfg, engine.info)
        parts.preprocess = [
            PreprocessStage(
                FanIn([], threading.Event()),
                engine,
                self.prepared,
                self.streams(len(cfg.streams[w::workers])),
                self.stop,
                self.on_failure,
                name="preprocess" if workers == 1 else f"preprocess-{w}",
                keep_seen=bool(cfg.secondary),
                observe=self.observer("preprocess"),
            )
            for w in range(workers)
        ]
        for i, stream in enumerate(cfg.streams):
            self.wire_stream(stream, parts.sources[stream.id], parts.preprocess[i % workers])
        if cfg.events.store is not None:
            from pipeline.media.store import EventStore

            parts.event_store = EventStore(cfg.events.store)
        info = engine.info
        writer = BusWriter(bus, self.stop, info.model, info.to_json(), MaskFormat(**cfg.publish.masks.model_dump()))
        parts.publish = PublishStage(
            self._secondary(),
            [stream_plan(cfg, s) for s in cfg.streams],
            build_sinks(
                cfg, writer, self._face_sink(writer), pictures, parts.event_store, parts.packet_rings, info.names
            ),
            writer,
            self.stop,
            self.on_failure,
            state_changes=self.state_changes,
            open_ended=self.open_ended,
            wait_for_subscriber=cfg.publish.wait_for_subscriber,
            subscriber_timeout_s=cfg.publish.subscriber_timeout_s,
            on_latency=on_latency,
            observe=self.observer("publish"),
        )
        extra = [stage for stage in (parts.faces, parts.secondary) if stage is not None]
        parts.threads = [parts.publish, *extra, *parts.threads, *parts.preprocess, *parts.captures]

    def wire_stream(self, stream: StreamConfig, source: Source, worker: PreprocessStage) -> CaptureStage:
        """Build one stream's parts (:func:`~pipeline.assembly.build_stream`) and keep them; a stream added again
        under an ended one's id takes its place in the reports."""
        built = build_stream(stream, source, worker, self.stop, self.on_failure, self.observer("capture"))
        parts = self.parts
        if built.image_ops is not None:
            parts.image_ops[stream.id] = built.image_ops
        if built.motion is not None:
            parts.motion_gates[stream.id] = built.motion
        parts.sources[stream.id] = source
        parts.captures = [c for c in parts.captures if c.stream_id != stream.id] + [built.capture]
        parts.queues = [q for q in parts.queues if q.name != built.queue.name] + [built.queue]
        return built.capture

    def add_stream(self, stream: StreamConfig, source: Source) -> CaptureStage:
        """A stream joining the running pipeline: counted by every stage, announced to publish, wired as at
        start-up; returns its capture thread (not started)."""
        parts = self.parts
        worker = parts.preprocess[len(parts.captures) % len(parts.preprocess)]
        worker.stream_added()
        assert parts.infer is not None
        parts.infer.streams.add()
        if parts.secondary is not None:
            parts.secondary.stream_added()
        self.state_changes.put(StreamAdded(stream_plan(self.config, stream)))
        capture = self.wire_stream(stream, source, worker)
        parts.threads.append(capture)
        return capture

    def _secondary(self) -> BoundedQueue[ResultItem]:
        """Secondary models (``secondary``) between infer and publish; returns the queue the publisher reads."""
        cfg = self.config
        if not cfg.secondary:
            return self.results
        from pipeline.secondary import SecondaryStage, load_crop_model

        models = [(s, load_crop_model(s, cfg.model.device)) for s in cfg.secondary]
        out: BoundedQueue[ResultItem] = BoundedQueue("secondary", self.results.maxsize, OverflowPolicy.BLOCK, self.stop)
        self.parts.secondary = SecondaryStage(
            self.results,
            out,
            self.streams(len(cfg.streams)),
            models,
            self.stop,
            self.on_failure,
            observe=self.observer("secondary"),
        )
        self.parts.queues.append(out)
        log.info("secondary models: %s", ", ".join(f"{s.kind} {model.name}" for s, model in models))
        return out

    def _face_sink(self, writer: BusWriter) -> FaceSink | None:
        """The publish stage's side of the face thread, when there is one."""
        stage = self.parts.faces
        if stage is None:
            return None
        model = "" if stage.detector is None else stage.detector.info.model
        return FaceSink(stage.jobs, stage.results, stage.config.every_n_frames, stage.settled, model, writer)
