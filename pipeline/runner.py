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
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from engines.base import DetectionEngine
from engines.registry import load_engine
from pipeline.ages import AgeCounts
from pipeline.assembly import (
    decoder_threads,
    warmup_formats,
    with_decoder_threads,
)
from pipeline.builder import EngineFactory, StageBuilder
from pipeline.bus import BusPublisher
from pipeline.config import PipelineConfig, StreamConfig
from pipeline.curve import CurveServer
from pipeline.errors import ConfigError, EdgesightError, StartupInterrupted
from pipeline.imageops import ImageOps, build_ops
from pipeline.media.packets import PACKETS_BEYOND_PRE_S, PacketRing
from pipeline.metrics import PrometheusMetrics
from pipeline.motion import MotionGate
from pipeline.observers import Observer, metrics_for, start_observers
from pipeline.parts import Parts
from pipeline.queues import BoundedQueue, OverflowPolicy
from pipeline.recorder import FrameSink
from pipeline.report import Progress, RunReport
from pipeline.sources import Source, make_source
from pipeline.sources.base import SourceMaker
from pipeline.sources.opening import open_all
from pipeline.stages import (
    InferStage,
    PublishStage,
    StageThread,
    StreamAdded,
)
from pipeline.supervision import StateChange, SupervisedSource
from pipeline.view import StreamState

if TYPE_CHECKING:
    from pipeline.media.store import EventStore
    from pipeline.preview import PreviewServer

log = logging.getLogger(__name__)

STOP_JOIN_DEADLINE_S = 1.5
"""All stage threads together get this long to finish after ``stop()``."""
STATE_QUEUE_SIZE = 1024
"""Source state changes waiting for the publish stage (a handful per reconnect)."""
CONNECT_WAIT_S = 3.0
"""How long start-up waits, once the model has loaded, for cameras still making their first connection before the
model's warm-up (which needs their frame format)."""
CONNECT_MAX_S = 12.0
"""Start-up never waits longer than this after the sources open for cameras to connect: a slower one is warmed up
for when its first frames come."""
CONNECT_POLL_S = 0.05
"""How often the wait while the model loads looks at the cameras."""


def _awaited(cameras: list[SupervisedSource]) -> bool:
    """Some camera is still making its first attempt and its frame format is not yet known."""
    return any(c.connecting and c.frame_format is None for c in cameras)


class Pipeline:
    """One process's pipeline: N capture threads feeding one preprocess, infer and publish thread."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        source_factory: SourceMaker = make_source,
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
        self._parts = Parts()
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
        self._builder = StageBuilder(
            config, self._parts, self.stop_event, self._fail, self._state_changes, self.metrics.stage_observer
        )
        self.bus: BusPublisher | None = None
        self._started_at = 0.0
        self._opened_at = 0.0
        self._finished_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open sources, bind the bus, load the engine and start every stage thread.

        Raises the first start-up error (bad source, endpoint or model) after
        releasing whatever was opened.
        """
        cfg = self.config
        try:
            infer, formats = self._builder.launch_engine(self._engine_factory)
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
            self._await_cameras(infer)
            formats.set_result(warmup_formats(self.config.streams, self._parts.sources))
            engine = self._await_engine(infer)
            self._builder.load_faces(engine.info)
            self._start_preview()
            metrics = self.metrics
            on_latency = metrics.observe_latency if isinstance(metrics, PrometheusMetrics) else None
            self._builder.build_stages(engine, self.bus, self._pictures, on_latency)
        except BaseException:
            self.stop()
            self.close()
            raise
        self._started_at = time.monotonic()
        for thread in self._parts.threads:
            if not thread.is_alive():
                thread.start()
        observers, self.metrics_port = start_observers(self, cfg, self.metrics)
        self._observers += observers

    def _supervised(self, stream: StreamConfig) -> SupervisedSource:
        def report(change: StateChange) -> None:
            self._state_changes.put(change)

        return SupervisedSource(stream.id, lambda: self._source(stream), stream.reconnect, report)

    def _source(self, stream: StreamConfig) -> Source:
        config = with_decoder_threads(stream.source, self._decoder_threads)
        ring = self._packet_ring(stream)
        return self._source_factory(config) if ring is None else self._source_factory(config, packets=ring)

    def _packet_ring(self, stream: StreamConfig) -> PacketRing | None:
        """Where the stream's source keeps its compressed packets for clips (kept across reconnects); a source that
        does not demux with PyAV in this process leaves it empty, and its clips are encoded from its frames."""
        clips = self.config.events.clips
        if clips is None:
            return None
        rings = self._parts.packet_rings
        if stream.id not in rings:
            rings[stream.id] = PacketRing(clips.pre_s + PACKETS_BEYOND_PRE_S)
        return rings[stream.id]

    def _open_sources(self) -> None:
        """Open files, folders and scenes now (a bad one is a start-up error); cameras connect in their threads."""
        streams = self.config.streams
        sources = [self._supervised(s) if s.supervised else self._source(s) for s in streams]
        open_all(sources)
        self._opened_at = time.monotonic()
        for source in sources:
            if isinstance(source, SupervisedSource):
                source.connect_early()
        for stream, source in zip(streams, sources, strict=True):
            self._parts.sources[stream.id] = source
            log.info("stream '%s': opened %s (queue policy %s)", stream.id, source.description, stream.policy.value)

    def _await_cameras(self, infer: InferStage) -> None:
        """Give the cameras' first connections (made while the model loads) until the model has loaded and
        :data:`CONNECT_WAIT_S` more, at most :data:`CONNECT_MAX_S` after the sources opened, so the model is warmed
        up on their frames' format: warming up again when a camera's first frame comes pauses every camera (NVDEC
        decoders wait for graph captures). Returns as soon as every camera's format is known (or its first attempt
        has ended), or the engine failed."""
        cameras = [s for s in self._parts.sources.values() if isinstance(s, SupervisedSource)]
        cap = self._opened_at + CONNECT_MAX_S
        while _awaited(cameras) and time.monotonic() < cap and not infer.loaded.done():
            if infer.model_loaded.wait(CONNECT_POLL_S):
                break
        if infer.loaded.done():  # failed: its error is what start-up raises next
            return
        deadline = min(cap, time.monotonic() + CONNECT_WAIT_S)
        while _awaited(cameras) and time.monotonic() < deadline and not self.stop_event.wait(CONNECT_POLL_S):
            pass
        if cameras:
            known = sum(c.frame_format is not None for c in cameras)
            took = time.monotonic() - self._opened_at
            log.info("cameras: %d of %d formats known %.1f s after the sources opened", known, len(cameras), took)

    def _await_engine(self, infer: InferStage) -> DetectionEngine:
        """Wait for the engine (or its error), then size the queues for its batches.

        The infer thread joins the stages only now: start-up that fails
        before (a bad source) does not wait for a model still loading.
        """
        while True:
            try:
                engine = self.engine = infer.loaded.result(timeout=0.1)
                break
            except FutureTimeout:
                if self.stop_event.is_set():
                    raise StartupInterrupted("stopped while loading the model") from None
        self._parts.infer = infer
        self._parts.threads.append(infer)
        info = engine.info
        self._builder.size_queues(info)
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
        return engine

    # -- streams at run time ---------------------------------------------------------------------------
    def add_stream(self, stream: StreamConfig) -> None:
        """Start a new stream in the running pipeline (its source is opened first; errors say why, one line)."""
        assert self.engine is not None
        with self._control_lock:
            live = {c.stream_id for c in self._parts.captures if c.is_alive()}
            if stream.id in live:
                raise ConfigError(f"stream '{stream.id}' is already running")
            source: Source = self._supervised(stream) if stream.supervised else self._source(stream)
            source.open()
            if self.preview is not None:
                self.preview.add_stream(stream, self.config.preview.processed)
            capture = self._builder.add_stream(stream, source)
            capture.start()
            log.info("stream '%s': added (%s)", stream.id, source.description)

    def remove_stream(self, stream_id: str) -> None:
        """End one stream of the running pipeline; its ``stopped`` status follows its last results."""
        with self._control_lock:
            capture = next((c for c in self._parts.captures if c.stream_id == stream_id and c.is_alive()), None)
            if capture is None:
                raise ConfigError(f"no running stream '{stream_id}'")
            capture.remove()
            log.info("stream '%s': removed", stream_id)

    def _start_preview(self) -> None:
        p = self.config.preview
        if p.port is None:
            return
        from pipeline.preview import PreviewServer
        from pipeline.recorder import Overlays

        streams = self.config.streams
        views = {s.id: build_ops(s.preprocess) for s in streams if s.preprocess} if p.processed else {}
        self.preview = PreviewServer(
            p.host, p.port, [s.id for s in streams], Overlays.from_streams(streams), p.max_fps, views, self
        )
        self._observers.append(self.preview)
        self._pictures["preview"] = self.preview
        log.info("preview on http://%s:%d/", p.host, self.preview.port)

    def _fail(self, stage: str, exc: BaseException) -> None:
        log.debug("stage %s failed", stage, exc_info=exc)
        if self._failure is None:
            detail = str(exc) if isinstance(exc, EdgesightError) else f"{type(exc).__name__}: {exc}"
            self._failure = f"stage '{stage}' failed: {detail}"
            log.error("%s", self._failure)
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream has been published to its end (or the pipeline stopped)."""
        if self._parts.publish is None:
            return True
        self._parts.publish.join(timeout)
        done = not self._parts.publish.is_alive()
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
        for capture in self._parts.captures:
            capture.interrupt()
        for q in self._parts.queues:
            q.wake()
        deadline = time.monotonic() + STOP_JOIN_DEADLINE_S
        for thread in self._parts.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.1f s", thread.name, STOP_JOIN_DEADLINE_S)
        if self._finished_at is None:
            self._finished_at = time.monotonic()

    def close(self) -> None:
        """Release sources, bus and engine. Call after ``stop()``.

        A source whose capture thread is still reading (a native call that a stop cannot cut short) is left to that
        thread, which releases it on its way out: releasing a decoder under a read in progress can end the process.
        """
        for observer in self._observers:
            observer.close()
        self._observers.clear()
        reading = {capture.stream_id for capture in self._parts.captures if capture.is_alive()}
        for stream_id, source in self._parts.sources.items():
            if stream_id not in reading:
                source.release()
        if self.bus is not None:
            self.bus.close()
        if self.engine is not None:
            self.engine.close()
        if self._parts.faces is not None:
            self._parts.faces.close()
        if self._parts.event_store is not None:
            self._parts.event_store.close()
            self._parts.event_store = None

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
        return self._parts.progress(time.monotonic() - self._started_at if self._started_at else 0.0)

    def stream_states(self) -> list[StreamState]:
        """Each stream's state and counters now (cheap; read by metrics scrapes and health checks)."""
        return self._parts.stream_states()

    def frame_ages(self) -> dict[str, AgeCounts]:
        """How old frames were at each hand-off so far; two snapshots give a window's
        (:func:`~pipeline.ages.summaries`)."""
        return self._parts.frame_ages()

    @property
    def image_ops(self) -> dict[str, ImageOps]:
        """Per stream: the image operations before the model, with their running costs."""
        return self._parts.image_ops

    @property
    def motion_gates(self) -> dict[str, MotionGate]:
        """Per stream: motion gating, with its frame and gated counts."""
        return self._parts.motion_gates

    @property
    def stages(self) -> list[StageThread]:
        """The stage threads (capture threads included)."""
        return list(self._parts.threads)

    @property
    def publisher(self) -> PublishStage | None:
        return self._parts.publish

    def sink_failures(self) -> dict[str, int]:
        """Failed calls per sink so far (0 for each sink that has not failed)."""
        return self._parts.sink_failures()

    @property
    def event_store(self) -> EventStore | None:
        return self._parts.event_store

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per stream with lines or zones, its line and zone counts now."""
        return self._parts.counts()

    def sink_drops(self) -> dict[str, int]:
        """Messages each sink dropped so far."""
        return self._parts.sink_drops()

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each queue now (for soak runs and metrics)."""
        return self._parts.queue_depths()

    @property
    def failure(self) -> str | None:
        return self._failure

    def report(self) -> RunReport:
        assert self.engine is not None
        end = self._finished_at or time.monotonic()
        return self._parts.report(self.engine.info, self._failure, end - self._started_at)
