"""Assembling and running a pipeline: sources → capture → preprocess → infer → publish.

Start-up opens every source, binds the publisher and loads the engine in the
calling thread, so a bad file, endpoint or model fails at once with a clear
message. ``stop()`` is idempotent, signals every stage through one event,
unblocks sources and queues, and joins with a deadline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from engines.base import DetectionEngine, FrameFormat, ModelSpec
from engines.registry import load_engine
from pipeline.assembly import (
    build_sinks,
    build_stream,
    check_faces_model,
    decoder_threads,
    face_detector_loader,
    model_spec,
    preprocess_threads,
    stream_plan,
    warmup_formats,
    with_decoder_threads,
)
from pipeline.bus import BusPublisher
from pipeline.config import PipelineConfig, StreamConfig
from pipeline.curve import CurveServer
from pipeline.errors import ConfigError, EdgesightError, StartupInterrupted
from pipeline.faces.messages import FaceJob, FaceResult
from pipeline.faces.stage import FaceStage, load_recognizer
from pipeline.imageops import ImageOps, build_ops
from pipeline.messages import MaskFormat, PreparedItem, ResultItem
from pipeline.metrics import PrometheusMetrics
from pipeline.motion import MotionGate
from pipeline.observers import Observer, metrics_for, start_observers
from pipeline.queues import BoundedQueue, FanIn, OverflowPolicy, QueueView, StreamCount
from pipeline.recorder import FrameSink
from pipeline.report import Progress, RunReport, StreamReport, frames_to_take, percentiles
from pipeline.sinks import BusWriter, FaceSink
from pipeline.sources import Source, make_source
from pipeline.sources.opening import open_all
from pipeline.stages import (
    CaptureStage,
    InferStage,
    PreprocessStage,
    PublishStage,
    StageClock,
    StageThread,
    StreamAdded,
)
from pipeline.supervision import StateChange, SupervisedSource
from pipeline.view import StreamState

if TYPE_CHECKING:
    from pipeline.preview import PreviewServer
    from pipeline.secondary import SecondaryStage

log = logging.getLogger(__name__)

STOP_JOIN_DEADLINE_S = 1.5
"""All stage threads together get this long to finish after ``stop()``."""
STATE_QUEUE_SIZE = 1024
"""Source state changes waiting for the publish stage (a handful per reconnect)."""

SourceFactory = Callable[[Any], Source]
EngineFactory = Callable[[ModelSpec, str], DetectionEngine]


class Pipeline:
    """One process's pipeline: N capture threads feeding one preprocess, infer and publish thread."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        source_factory: SourceFactory = make_source,
        engine_factory: EngineFactory = load_engine,
        sink: FrameSink | None = None,
    ) -> None:
        """``sink``: also hand every published frame, redacted, to this (a recording)."""
        self.config = config
        self._source_factory = source_factory
        self._engine_factory = engine_factory
        self._pictures: dict[str, FrameSink] = {"recording": sink} if sink is not None else {}
        self._decoder_threads = decoder_threads(config.streams, os.cpu_count() or 1)
        """Decoding threads of each CPU decoder that sets none (the cores shared among them)."""
        self.preview: PreviewServer | None = None
        """The browser preview (``preview.port``), serving from start to close."""
        self.engine: DetectionEngine | None = None
        self.stop_event = threading.Event()
        self._stop_lock = threading.Lock()
        self._control_lock = threading.Lock()
        self._stopped = False
        self._failure: str | None = None
        self._sources: dict[str, Source] = {}
        self._captures: list[CaptureStage] = []
        self._threads: list[StageThread] = []
        self._preprocess: list[PreprocessStage] = []
        self._prepared: BoundedQueue[PreparedItem] | None = None
        self._results: BoundedQueue[ResultItem] | None = None
        self._queues: list[QueueView] = []
        self._publish: PublishStage | None = None
        self._faces: FaceStage | None = None
        self._secondary: SecondaryStage | None = None
        self.image_ops: dict[str, ImageOps] = {}
        """Per stream: the image operations before the model, with their running costs."""
        self.motion_gates: dict[str, MotionGate] = {}
        """Per stream: motion gating, with its frame and gated counts."""
        self._observers: list[Observer] = []
        """The preview, control endpoint, health server and status file, closed with the pipeline."""
        self.metrics_port: int | None = None
        """The port actually serving metrics (``metrics.port: 0`` picks a free one)."""
        self.metrics = metrics_for(config)
        """Prometheus metrics when ``metrics.port`` serves them, else the null object."""
        self._state_changes: BoundedQueue[StateChange | StreamAdded] = BoundedQueue(
            "status", STATE_QUEUE_SIZE, OverflowPolicy.BLOCK, self.stop_event
        )
        """Live sources' state changes, on their way to the publish stage (the only thread that sends)."""
        self.bus: BusPublisher | None = None
        self._started_at = 0.0
        self._finished_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open sources, bind the bus, load the engine and start every stage thread.

        Raises the first start-up error (bad source, endpoint or model) after
        releasing whatever was opened.
        """
        cfg = self.config
        try:
            self._build_queues()
            infer, formats = self._launch_engine()
            try:
                self._open_sources()
                curve = cfg.publish.curve
                self.bus = BusPublisher(
                    cfg.publish.endpoint,
                    cfg.publish.send_hwm,
                    lossless=cfg.publish.wait_for_subscriber,
                    curve=CurveServer.load(curve.server_secret, curve.clients) if curve else None,
                )
            except BaseException as exc:
                formats.set_exception(exc)
                raise
            formats.set_result(warmup_formats(self.config.streams, self._sources))
            self._await_engine(infer)
            self._start_faces()
            self._start_preview()
            self._build_stages()
        except BaseException:
            self.stop()
            self.close()
            raise
        self._started_at = time.monotonic()
        for thread in self._threads:
            if not thread.is_alive():
                thread.start()
        observers, self.metrics_port = start_observers(self, cfg, self.metrics)
        self._observers += observers

    def _supervised(self, stream: StreamConfig) -> SupervisedSource:
        def report(change: StateChange) -> None:
            self._state_changes.put(change)

        return SupervisedSource(stream.id, lambda: self._source(stream), stream.reconnect, report)

    def _source(self, stream: StreamConfig) -> Source:
        return self._source_factory(with_decoder_threads(stream.source, self._decoder_threads))

    def _open_sources(self) -> None:
        """Open files, folders and scenes now (a bad one is a start-up error); cameras connect in their threads."""
        streams = self.config.streams
        sources = [self._supervised(s) if s.supervised else self._source(s) for s in streams]
        open_all(sources)
        for stream, source in zip(streams, sources, strict=True):
            self._sources[stream.id] = source
            log.info("stream '%s': opened %s (queue policy %s)", stream.id, source.description, stream.policy.value)

    def _build_queues(self) -> None:
        """The queues between preprocess, infer and publish (resized to two batches once the engine is known)."""
        cfg = self.config
        size = cfg.queue_size
        prepared: BoundedQueue[PreparedItem] = BoundedQueue("prepared", size, OverflowPolicy.BLOCK, self.stop_event)
        results: BoundedQueue[ResultItem] = BoundedQueue("results", size, OverflowPolicy.BLOCK, self.stop_event)
        self._prepared, self._results = prepared, results
        self._queues = [prepared, results, self._state_changes]

    def _launch_engine(self) -> tuple[InferStage, Future[list[FrameFormat]]]:
        """Start the infer thread, which loads the engine while the sources open, then warms it up on the frame
        formats set in the future it returns (or gives the engine up when that future holds an error)."""
        cfg = self.config
        spec = model_spec(cfg)
        assert self._prepared is not None and self._results is not None
        formats: Future[list[FrameFormat]] = Future()
        infer = InferStage(
            self._prepared,
            self._results,
            StreamCount(len(cfg.streams), open_ended=self.controlled),
            self.stop_event,
            self._fail,
            lambda: self._engine_factory(spec, cfg.model.engine),
            cfg.model.classes,
            cfg.model.batch_timeout_ms / 1000.0,
            formats.result,
        )
        infer.start()
        return infer, formats

    def _await_engine(self, infer: InferStage) -> None:
        """Wait for the engine (or its error), then size the queues for its batches.

        The infer thread joins the stages only now: start-up that fails
        before (a bad source) does not wait for a model still loading.
        """
        cfg = self.config
        while True:
            try:
                self.engine = infer.loaded.result(timeout=0.1)
                break
            except FutureTimeout:
                if self.stop_event.is_set():
                    raise StartupInterrupted("stopped while loading the model") from None
        self._threads.append(infer)
        assert self._prepared is not None and self._results is not None
        info = self.engine.info
        for q in (self._prepared, self._results):
            q.maxsize = max(cfg.queue_size, 2 * info.max_batch)
        if all(stream.source.live for stream in cfg.streams):
            # Live cameras: one batch waits while one runs, so a frame waits at most a pass before its own; the
            # cameras' newer frames replace older ones in their capture queues meanwhile (preprocess takes a frame
            # only when there is room here).
            self._prepared.maxsize = max(1, info.max_batch)
        log.info(
            "engine: %s on %s (%s), model %s, imgsz %d, batch up to %d%s%s",
            info.backend,
            info.device,
            info.precision,
            info.model,
            info.imgsz,
            info.max_batch,
            f", engine file {info.artifact} ({info.cache})" if info.artifact else "",
            f"; passed over: {info.fallback_reason}" if info.fallback_reason else "",
        )

    @property
    def controlled(self) -> bool:
        """Streams come and go at run time (``control.endpoint``): the pipeline runs until stopped."""
        return self.config.control.endpoint is not None

    # -- streams at run time ---------------------------------------------------------------------------
    def add_stream(self, stream: StreamConfig) -> None:
        """Start a new stream in the running pipeline (its source is opened first; errors say why, one line)."""
        assert self.engine is not None and self._prepared is not None
        with self._control_lock:
            live = {c.stream_id for c in self._captures if c.is_alive()}
            if stream.id in live:
                raise ConfigError(f"stream '{stream.id}' is already running")
            source: Source = self._supervised(stream) if stream.supervised else self._source(stream)
            source.open()
            worker = self._preprocess[len(self._captures) % len(self._preprocess)]
            worker.streams.add()
            infer = next(t for t in self._threads if isinstance(t, InferStage))
            infer.streams.add()
            if self._secondary is not None:
                self._secondary.streams.add()
            self._state_changes.put(StreamAdded(stream_plan(self.config, stream)))
            if self.preview is not None:
                self.preview.add_stream(stream, self.config.preview.processed)
            capture = self._wire_stream(stream, source, worker)
            self._threads.append(capture)
            self.metrics.observe_stage(capture)
            capture.start()
            log.info("stream '%s': added (%s)", stream.id, source.description)

    def remove_stream(self, stream_id: str) -> None:
        """End one stream of the running pipeline; its ``stopped`` status follows its last results."""
        with self._control_lock:
            capture = next((c for c in self._captures if c.stream_id == stream_id and c.is_alive()), None)
            if capture is None:
                raise ConfigError(f"no running stream '{stream_id}'")
            capture.remove()
            log.info("stream '%s': removed", stream_id)

    def _start_secondary(self) -> BoundedQueue[ResultItem]:
        """Secondary models (``secondary``) between infer and publish; returns the queue the publisher reads."""
        assert self._results is not None
        cfg = self.config
        if not cfg.secondary:
            return self._results
        from pipeline.secondary import SecondaryStage, load_crop_model

        models = [(s, load_crop_model(s, cfg.model.device)) for s in cfg.secondary]
        out: BoundedQueue[ResultItem] = BoundedQueue(
            "secondary", self._results.maxsize, OverflowPolicy.BLOCK, self.stop_event
        )
        self._secondary = SecondaryStage(
            self._results,
            out,
            StreamCount(len(cfg.streams), open_ended=self.controlled),
            models,
            self.stop_event,
            self._fail,
        )
        self._queues.append(out)
        log.info("secondary models: %s", ", ".join(f"{s.kind} {model.name}" for s, model in models))
        return out

    def _start_preview(self) -> None:
        p = self.config.preview
        if p.port is None:
            return
        from pipeline.preview import PreviewServer
        from pipeline.recorder import Overlays

        streams = self.config.streams
        views = {s.id: build_ops(s.preprocess) for s in streams if s.preprocess} if p.processed else {}
        self.preview = PreviewServer(
            p.host, p.port, [s.id for s in streams], Overlays.from_streams(streams), p.max_fps, views
        )
        self._observers.append(self.preview)
        self._pictures["preview"] = self.preview
        log.info("preview on http://%s:%d/", p.host, self.preview.port)

    def _start_faces(self) -> None:
        """Load the face thread's models (``faces`` config) and link it to the publish stage."""
        faces = self.config.faces
        if faces is None:
            return
        assert self.engine is not None
        check_faces_model(faces, self.engine.info)
        jobs: BoundedQueue[FaceJob] = BoundedQueue("faces.jobs", 1, OverflowPolicy.DROP_OLDEST, self.stop_event)
        results: BoundedQueue[FaceResult] = BoundedQueue("faces.results", 64, OverflowPolicy.BLOCK, self.stop_event)
        stage = FaceStage(
            jobs,
            results,
            faces,
            self.stop_event,
            self._fail,
            detector=face_detector_loader(faces, self.config.model.device),
            recognizer=(lambda: load_recognizer(faces, self.config.model.device)) if faces.recognize else None,
        )
        stage.load()
        self._faces = stage
        self._queues = [*self._queues, jobs, results]

    def _face_sink(self, writer: BusWriter) -> FaceSink | None:
        """The publish stage's side of the face thread, when there is one."""
        stage = self._faces
        if stage is None:
            return None
        model = "" if stage.detector is None else stage.detector.info.model
        return FaceSink(stage.inp, stage.out, stage.config.every_n_frames, stage.settled, model, writer)

    def _build_stages(self) -> None:
        assert self.engine is not None and self.bus is not None
        assert self._prepared is not None and self._results is not None
        cfg = self.config
        workers = preprocess_threads(cfg, self.engine.info)
        self._preprocess = [
            PreprocessStage(
                FanIn([], threading.Event()),
                self.engine,
                self._prepared,
                StreamCount(len(cfg.streams[w::workers]), open_ended=self.controlled),
                self.stop_event,
                self._fail,
                name="preprocess" if workers == 1 else f"preprocess-{w}",
                keep_seen=bool(cfg.secondary),
            )
            for w in range(workers)
        ]
        for i, stream in enumerate(cfg.streams):
            self._wire_stream(stream, self._sources[stream.id], self._preprocess[i % workers])
        info = self.engine.info
        publish_input = self._start_secondary()
        writer = BusWriter(
            self.bus, self.stop_event, info.model, info.to_json(), MaskFormat(**cfg.publish.masks.model_dump())
        )
        metrics = self.metrics
        self._publish = PublishStage(
            publish_input,
            [stream_plan(cfg, s) for s in cfg.streams],
            build_sinks(cfg, writer, self._face_sink(writer), self._pictures),
            writer,
            self.stop_event,
            self._fail,
            state_changes=self._state_changes,
            open_ended=self.controlled,
            wait_for_subscriber=cfg.publish.wait_for_subscriber,
            subscriber_timeout_s=cfg.publish.subscriber_timeout_s,
            on_latency=metrics.observe_latency if isinstance(metrics, PrometheusMetrics) else None,
        )
        faces = [self._faces] if self._faces is not None else []
        secondary = [self._secondary] if self._secondary is not None else []
        self._threads = [self._publish, *faces, *secondary, *self._threads, *self._preprocess, *self._captures]

    def _wire_stream(self, stream: StreamConfig, source: Source, worker: PreprocessStage) -> CaptureStage:
        """Build one stream's parts (:func:`~pipeline.assembly.build_stream`) and keep them; a stream added again
        under an ended one's id takes its place in the reports."""
        parts = build_stream(stream, source, worker, self.stop_event, self._fail)
        if parts.image_ops is not None:
            self.image_ops[stream.id] = parts.image_ops
        if parts.motion is not None:
            self.motion_gates[stream.id] = parts.motion
        self._sources[stream.id] = source
        self._captures = [c for c in self._captures if c.stream_id != stream.id] + [parts.capture]
        self._queues = [q for q in self._queues if q.name != parts.queue.name] + [parts.queue]
        return parts.capture

    def _fail(self, stage: str, exc: BaseException) -> None:
        log.debug("stage %s failed", stage, exc_info=exc)
        if self._failure is None:
            detail = str(exc) if isinstance(exc, EdgesightError) else f"{type(exc).__name__}: {exc}"
            self._failure = f"stage '{stage}' failed: {detail}"
            log.error("%s", self._failure)
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream has been published to its end (or the pipeline stopped)."""
        if self._publish is None:
            return True
        self._publish.join(timeout)
        done = not self._publish.is_alive()
        if done and self._finished_at is None:
            self._finished_at = time.monotonic()
        return done

    def stop(self) -> None:
        """Stop every stage (idempotent): producers first, then joins bounded by a deadline."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.stop_event.set()
        for capture in self._captures:
            capture.interrupt()
        for q in self._queues:
            q.wake()
        deadline = time.monotonic() + STOP_JOIN_DEADLINE_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.1f s", thread.name, STOP_JOIN_DEADLINE_S)
        if self._finished_at is None:
            self._finished_at = time.monotonic()

    def close(self) -> None:
        """Release sources, bus and engine. Call after ``stop()``."""
        for observer in self._observers:
            observer.close()
        self._observers.clear()
        for source in self._sources.values():
            source.release()
        if self.bus is not None:
            self.bus.close()
        if self.engine is not None:
            self.engine.close()
        if self._faces is not None:
            self._faces.close()

    def run(self) -> RunReport:
        """Start, wait for every stream to end, stop and close; returns the report."""
        self.start()
        try:
            while not self.wait(0.2):
                pass
        finally:
            self.stop()
            report = self.report()
            self.close()
        return report

    # -- results -----------------------------------------------------------------------------
    def progress(self) -> Progress:
        """A cheap snapshot for live displays."""
        publish = self._publish
        published = sum(publish.seq.values()) if publish else 0
        elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        drops = sum(sum(q.drops().values()) for q in self._queues)
        return Progress(
            published=published,
            elapsed_s=elapsed,
            latency_ms=publish.last_latency_ms if publish else 0.0,
            objects=publish.last_objects if publish else 0,
            drops=drops,
        )

    def stream_states(self) -> list[StreamState]:
        """Each stream's state and counters now (cheap; read by metrics scrapes and health checks)."""
        publish = self._publish
        out = []
        for capture in self._captures:
            sid = capture.stream_id
            source = self._sources.get(sid)
            ended = publish is not None and sid in publish.ended
            state = "ended" if ended else getattr(source, "state", None) or "running"
            out.append(
                StreamState(
                    sid,
                    state,
                    capture.frames,
                    publish.seq.get(sid, 0) if publish else 0,
                    int(getattr(source, "reconnects", 0)),
                    self._drops(sid),
                    frames_to_take(getattr(source, "total_frames", None), capture.max_frames),
                    publish.latency_ms_by_stream.get(sid, 0.0) if publish else 0.0,
                )
            )
        return out

    def _drops(self, stream_id: str) -> dict[str, int]:
        """Frames of one stream dropped so far, per queue that can drop them (0 until the first)."""
        counts = {q.name: q.drops().get(stream_id) for q in self._queues}
        return {name: n for name, n in counts.items() if n is not None}

    @property
    def stages(self) -> list[StageThread]:
        """The stage threads (capture threads included)."""
        return list(self._threads)

    @property
    def publisher(self) -> PublishStage | None:
        return self._publish

    def sink_failures(self) -> dict[str, int]:
        """Failed calls per sink so far (0 for each sink that has not failed)."""
        return dict(self._publish.sinks.failures) if self._publish is not None else {}

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each queue now (for soak runs and metrics)."""
        return {q.name: len(q) for q in self._queues}

    @property
    def failure(self) -> str | None:
        return self._failure

    def report(self) -> RunReport:
        assert self.engine is not None
        publish = self._publish
        reports = []
        for capture in self._captures:
            sid = capture.stream_id
            eos = publish.ended.get(sid) if publish else None
            reports.append(
                StreamReport(
                    stream_id=sid,
                    frames=capture.frames,
                    published=publish.seq.get(sid, 0) if publish else 0,
                    error=eos.error if eos else None,
                    stopped=eos is None or eos.stopped,
                    drops={queue: n for queue, n in self._drops(sid).items() if n},
                    refused=capture.refused,
                )
            )
        end = self._finished_at or time.monotonic()
        infer = next((t for t in self._threads if isinstance(t, InferStage)), None)
        stage_ms = {
            "capture": StageClock.ms_per_item([c.clock for c in self._captures]),
            "preprocess": StageClock.ms_per_item([p.clock for p in self._preprocess]),
            "infer": StageClock.ms_per_item([infer.clock] if infer else []),
            "publish": StageClock.ms_per_item([publish.clock] if publish else []),
        }
        for extra in (self._faces, self._secondary):
            if extra is not None:
                stage_ms[extra.name] = StageClock.ms_per_item([extra.clock])
        return RunReport(
            tuple(reports),
            end - self._started_at,
            self.engine.info,
            self._failure,
            stage_ms=stage_ms,
            latency_ms=percentiles(list(publish.latencies_ms) if publish else []),
            mean_batch=round(infer.clock.items / infer.batches, 2) if infer and infer.batches else 0.0,
            queue_peaks={q.name: q.high_water for q in self._queues},
            face_frames=self._faces.clock.items if self._faces is not None else 0,
            sink_failures={name: n for name, n in self.sink_failures().items() if n},
        )
