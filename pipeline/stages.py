"""The pipeline's stage threads: capture (one per stream), preprocess, infer and publish.

Each stage reads typed messages from a bounded queue with a timed wait, checks
the shared stop event, and forwards :class:`EndOfStream` sentinels so that the
end of every stream reaches the publisher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engines.base import DetectionEngine, FrameFormat, PendingDetections
from engines.masks import InstanceMasks
from engines.yuv import to_bgr
from pipeline.analytics.events import Event
from pipeline.analytics.stream import StreamAnalytics
from pipeline.analytics.thumbnails import thumbnail
from pipeline.bus import BusPublisher
from pipeline.config import PrivacyConfig
from pipeline.errors import ConfigError, PermanentSourceError, SourceError
from pipeline.faces.messages import FaceJob, FaceResult
from pipeline.imageops import ImageOps, map_boxes, upload
from pipeline.messages import EndOfStream, Frame, FrameResult, MaskFormat, PreparedFrame, SeenImage
from pipeline.motion import MotionGate
from pipeline.privacy import redacted
from pipeline.queues import BoundedQueue, FanIn, StreamCount
from pipeline.recorder import FrameSink, NullSink
from pipeline.schema import (
    COUNTS_TOPIC,
    DETECTIONS_TOPIC,
    EVENTS_TOPIC,
    FACES_TOPIC,
    STATUS_TOPIC,
    detections_body,
    status_body,
    topic_for,
)
from pipeline.secrecy import redact_json
from pipeline.sources import Source

log = logging.getLogger(__name__)

GET_TIMEOUT_S = 0.1
"""How long a stage waits on its input before re-checking the stop event."""

FailureHandler = Callable[[str, BaseException], None]
LATENCY_WINDOW = 100_000
"""Capture→publish latencies kept for percentiles (the most recent ones)."""


class StageClock:
    """Busy time and item count of one stage thread (read by reports, written only by its thread)."""

    __slots__ = ("busy_s", "items", "observer")

    def __init__(self) -> None:
        self.busy_s = 0.0
        self.items = 0
        self.observer: Callable[[float], None] | None = None
        """Called with the seconds per item of each ``add`` (metrics histograms); ``None``: nobody listens."""

    def add(self, seconds: float, items: int = 1) -> None:
        self.busy_s += seconds
        self.items += items
        if self.observer is not None and items:
            self.observer(seconds / items)

    @staticmethod
    def ms_per_item(clocks: Sequence[StageClock]) -> float:
        items = sum(c.items for c in clocks)
        return round(1000.0 * sum(c.busy_s for c in clocks) / items, 3) if items else 0.0


def resolve_classes(classes: Sequence[int | str] | None, names: dict[int, str]) -> frozenset[int] | None:
    """Class ids to keep, from ids or labels (``model.classes``)."""
    if classes is None:
        return None
    by_label = {label: cid for cid, label in names.items()}
    keep = set()
    for c in classes:
        if isinstance(c, int):
            keep.add(c)
        elif c in by_label:
            keep.add(by_label[c])
        else:
            raise ConfigError(f"model.classes: the model has no class '{c}' (it has: {', '.join(names.values())})")
    return frozenset(keep)


class StageThread(threading.Thread):
    """A named daemon thread whose unexpected exception stops the pipeline instead of vanishing."""

    def __init__(self, name: str, stop: threading.Event, on_failure: FailureHandler) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = stop
        self._on_failure = on_failure
        self.clock = StageClock()
        self.last_beat = time.monotonic()
        """When the thread last went round its loop (``/healthz``: a stage that stops beating is stuck)."""

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:  # reported to the pipeline, which stops and exits non-zero
            self._on_failure(self.name, exc)

    def loop(self) -> None:
        raise NotImplementedError


class CaptureStage(StageThread):
    """Reads one opened source into its capture queue; sends :class:`EndOfStream` from ``finally``."""

    def __init__(
        self,
        stream_id: str,
        source: Source,
        out: BoundedQueue[Any],
        stop: threading.Event,
        on_failure: FailureHandler,
        max_frames: int | None = None,
    ) -> None:
        super().__init__(f"capture-{stream_id}", stop, on_failure)
        self.stream_id = stream_id
        self.source = source
        self.out = out
        self.max_frames = max_frames
        self.frames = 0
        self.removed = threading.Event()
        self.refused = False
        """The source refused for good before its first frame (a wrong path or password): bad input."""

    def loop(self) -> None:
        error: str | None = None
        try:
            while (
                not self.stop_event.is_set()
                and not self.removed.is_set()
                and (self.max_frames is None or self.frames < self.max_frames)
            ):
                started = time.perf_counter()
                raw = self.source.read()
                self.clock.add(time.perf_counter() - started)
                if raw is None:
                    break
                frame = Frame(self.stream_id, self.frames, raw.pts_ms, time.time(), raw.image, raw.layout)
                if not self.out.put(frame):
                    break
                self.frames += 1
        except SourceError as exc:
            error = str(exc)
            self.refused = isinstance(exc, PermanentSourceError)
        except Exception as exc:
            error = f"{self.source.description}: {type(exc).__name__}: {exc}"
            log.debug("capture of '%s' failed", self.stream_id, exc_info=True)
        finally:
            self.source.release()
            if error:
                log.error("stream '%s': %s", self.stream_id, error)
            stopped = self.stop_event.is_set() or self.removed.is_set()
            self.out.put(EndOfStream(self.stream_id, self.frames, error, stopped=stopped))

    def interrupt(self) -> None:
        self.source.interrupt()

    def remove(self) -> None:
        """End this stream alone (removed at run time): its end travels through the stages like any other."""
        self.removed.set()
        self.source.interrupt()


class PreprocessStage(StageThread):
    """Turns frames from its capture queues into model inputs (letterbox, layout, normalize; upload on a GPU).

    There may be several, each serving a fixed set of streams, so frames of one
    stream keep their order.
    """

    def __init__(
        self,
        inputs: FanIn[Any],
        engine: DetectionEngine,
        out: BoundedQueue[Any],
        streams: int | StreamCount,
        stop: threading.Event,
        on_failure: FailureHandler,
        name: str = "preprocess",
        image_ops: Mapping[str, ImageOps] | None = None,
        motion: Mapping[str, MotionGate] | None = None,
        keep_seen: bool = False,
    ) -> None:
        super().__init__(name, stop, on_failure)
        self.keep_seen = keep_seen
        """Keep the operated-on picture with each frame (secondary models crop from it)."""
        self.motion = dict(motion or {})
        """Per stream: the motion gate that keeps still frames from the model."""
        self.image_ops = dict(image_ops or {})
        """Per stream: image operations before the model (crop, rotate, enhance, …)."""
        info = getattr(engine, "info", None)
        self._ops_device: str | None = None
        """Where host frames are uploaded before their image operations: the GPU the engine takes tensors on."""
        if info is not None and info.backend in ("torch", "tensorrt") and info.device.startswith("cuda"):
            self._ops_device = info.device
        self.inputs = inputs
        self.engine = engine
        self.out = out
        self.streams = streams if isinstance(streams, StreamCount) else StreamCount(streams)

    def loop(self) -> None:
        while not self.streams.done() and not self.stop_event.is_set():
            self.beat()
            # Take a frame only when the model's queue has room for it: a frame taken early would wait there,
            # aging, while a live camera's newer frames replace each other in its capture queue.
            if not self.out.wait_for_room(GET_TIMEOUT_S):
                continue
            item = self.inputs.get(GET_TIMEOUT_S)
            if item is None:
                continue
            if isinstance(item, EndOfStream):
                self.streams.end()
                self.out.put(item)
            else:
                started = time.perf_counter()
                prepared = self._prepare(item)
                self.clock.add(time.perf_counter() - started)
                self.out.put(prepared)

    def _prepare(self, frame: Frame) -> PreparedFrame:
        gate = self.motion.get(frame.stream_id)
        if gate is not None and not gate.moving(to_bgr(frame.image, frame.layout), frame.pts_ms):
            return PreparedFrame(frame, None, gated=gate.config.on_still)
        ops = self.image_ops.get(frame.stream_id)
        if ops is None:
            return PreparedFrame(frame, self.engine.prepare(frame.image, frame.layout))
        image = frame.image
        if isinstance(image, np.ndarray) and self._ops_device is not None:
            image = upload(image, self._ops_device)  # the operations run on the GPU the model runs on
        image, warp = ops.run(to_bgr(image, frame.layout))
        shape = (int(image.shape[0]), int(image.shape[1]))
        seen = SeenImage(image, warp.forward) if self.keep_seen else None
        return PreparedFrame(frame, self.engine.prepare(image), shape, warp.back, seen=seen)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch submitted to the engine whose results are not read yet."""

    batch: Sequence[PreparedFrame]
    pending: PendingDetections
    submit_s: float


class InferStage(StageThread):
    """Loads the engine on its own thread, then runs it on prepared frames.

    Loading here, not in the caller's thread, matters on the CPU: PyTorch's
    thread pools run markedly slower when a model built on one thread is run
    on another. ``loaded`` resolves to the engine (or the load error), so the
    pipeline can report a bad model at start-up. A batch holds up to
    ``batch_size`` frames from any streams: once it has one frame it waits at
    most ``batch_timeout_s`` for more, so a slow or dead camera never holds
    back the others.
    """

    def __init__(
        self,
        inp: BoundedQueue[Any],
        out: BoundedQueue[Any],
        streams: int | StreamCount,
        stop: threading.Event,
        on_failure: FailureHandler,
        load: Callable[[], DetectionEngine],
        classes: Sequence[int | str] | None = None,
        batch_timeout_s: float = 0.0,
        warmup_formats: Sequence[FrameFormat] | Callable[[], Sequence[FrameFormat]] = (),
    ) -> None:
        super().__init__("infer", stop, on_failure)
        self._formats = warmup_formats
        self.warmup_formats: tuple[FrameFormat, ...] = ()
        """The sources' frame formats, which the engine runs blank frames of before real ones (see ``warmup``); a
        callable gives them once the engine has loaded (the sources open meanwhile), or raises why not."""
        self.inp = inp
        self.out = out
        self.streams = streams if isinstance(streams, StreamCount) else StreamCount(streams)
        self.batch_size = 1
        """The engine's largest batch, set once it is loaded."""
        self.overlaps = False
        """The engine runs a batch while this thread collects the next (a GPU); on the host ``submit`` computes it."""
        self.batch_timeout_s = batch_timeout_s
        self.batches = 0
        self.gated = 0
        """Frames motion gating kept from the model."""
        self._last: dict[str, FrameResult] = {}
        self._load = load
        self._classes = classes
        self.loaded: Future[DetectionEngine] = Future()
        self.keep_classes: frozenset[int] | None = None
        self._names: dict[int, str] = {}
        self._warmed: set[tuple[int, ...]] = set()

    def run(self) -> None:
        engine: DetectionEngine | None = None
        try:
            start = time.perf_counter()
            engine = self._load()
            loaded = time.perf_counter()
            self.batch_size = max(1, engine.info.max_batch)
            self.overlaps = engine.info.asynchronous
            self._names = engine.info.names
            self.keep_classes = resolve_classes(self._classes, self._names)
            formats = self._formats() if callable(self._formats) else self._formats
            self.warmup_formats = tuple(formats)
            self._warmed = {fmt.shape for fmt in self.warmup_formats}
            ready = time.perf_counter()
            engine.warmup(self.warmup_formats)
            log.info("model loaded in %.1f s, warmed up in %.1f s", loaded - start, time.perf_counter() - ready)
        except BaseException as exc:  # handed to the thread that waits on ``loaded``
            if engine is not None:  # the pipeline never gets it (a source failed, or the warm-up did)
                engine.close()
            self.loaded.set_exception(exc)
            return
        self.engine = engine
        self.loaded.set_result(engine)
        super().run()

    def loop(self) -> None:
        """Collect and submit a batch, then finish the previous one while the device runs this one.

        One batch is in flight at a time: its results go out as soon as the
        input queue runs dry, and before any end-of-stream sentinel. On the
        host, where ``submit`` computes the batch, it is finished at once.
        """
        in_flight: _InFlight | None = None
        while not self.streams.done() and not self.stop_event.is_set():
            self.beat()
            item = self.inp.get_nowait() if in_flight else self.inp.get(GET_TIMEOUT_S)
            if item is None:
                if in_flight:
                    self._finish(in_flight)
                    in_flight = None
                continue
            batch, pending_eos = self._collect(item, self.streams.live)
            if batch and (fresh := self._unwarmed(batch)):
                if in_flight:
                    self._finish(in_flight)
                    in_flight = None
                self._warm(fresh)
            submitted = self._submit(batch) if batch else None
            if in_flight:
                self._finish(in_flight)
            in_flight = submitted
            if in_flight and not self.overlaps:  # computed at submit: its results need not wait for the next batch
                self._finish(in_flight)
                in_flight = None
            if pending_eos and in_flight:
                self._finish(in_flight)
                in_flight = None
            for eos in pending_eos:
                if isinstance(eos, PreparedFrame):
                    self._still(eos)
                    continue
                self.streams.end()
                self._last.pop(eos.stream_id, None)  # a stream that ended keeps no frame alive
                self.out.put(eos)
        if in_flight and not self.stop_event.is_set():
            self._finish(in_flight)

    def _unwarmed(self, batch: Sequence[PreparedFrame]) -> list[FrameFormat]:
        """Formats of frames on the GPU in ``batch`` that the engine has not been warmed up on (a camera that
        connected after start-up)."""
        if not self.overlaps:
            return []
        shapes = {tuple(p.model_input.shape) for p in batch if hasattr(p.model_input, "tensor")}
        return [FrameFormat(shape, "i420" if len(shape) == 2 else "bgr") for shape in shapes - self._warmed]

    def _warm(self, formats: Sequence[FrameFormat]) -> None:
        """Warm the engine up on ``formats`` at every batch size at once (CUDA graphs included): one pause when a
        camera first delivers, instead of one each time a batch reaches a size not seen before."""
        start = time.perf_counter()
        self.engine.warmup(formats)
        self._warmed.update(fmt.shape for fmt in formats)
        shapes = ", ".join("x".join(map(str, fmt.shape)) for fmt in formats)
        log.info("model warmed up for frames of shape %s in %.1f s", shapes, time.perf_counter() - start)

    def _collect(self, first: Any, live_streams: int) -> tuple[list[PreparedFrame], list[EndOfStream | PreparedFrame]]:
        """A batch starting with ``first``.

        It takes whatever is queued, up to the batch size; while it holds fewer
        frames than there are running streams it also waits, at most the batch
        timeout, for the others' next frames. A lone stream never waits.
        """
        batch: list[PreparedFrame] = []
        deadline = time.monotonic() + self.batch_timeout_s
        item = first
        while item is not None:
            if isinstance(item, EndOfStream) or (isinstance(item, PreparedFrame) and item.gated):
                return batch, [item]  # keep order: finish the batch, then forward the sentinel (or the still frame)
            batch.append(item)
            if len(batch) >= self.batch_size:
                break
            item = self.inp.get_nowait()
            if item is None and len(batch) < live_streams:
                remaining = deadline - time.monotonic()
                if remaining > 0 and not self.stop_event.is_set():
                    item = self.inp.get(remaining)
        return batch, []

    def _still(self, prepared: PreparedFrame) -> None:
        """A frame motion gating kept from the model: the stream's last detections again, or nothing."""
        self.gated += 1
        last = self._last.get(prepared.stream_id)
        if prepared.gated != "reuse":
            return
        if last is None:
            result = FrameResult(prepared.frame, np.zeros((0, 6), np.float32), self._names, 0.0, reused=True)
        else:
            result = replace(last, frame=prepared.frame, infer_ms=0.0, reused=True)
        self.out.put(result)

    def _submit(self, batch: Sequence[PreparedFrame]) -> _InFlight:
        start = time.perf_counter()
        pending = self.engine.submit([p.model_input for p in batch], [p.shape for p in batch])
        return _InFlight(batch, pending, time.perf_counter() - start)

    def _finish(self, job: _InFlight) -> None:
        start = time.perf_counter()
        outputs = job.pending.result()
        elapsed = job.submit_s + time.perf_counter() - start
        self.clock.add(elapsed, len(job.batch))
        self.batches += 1
        per_frame_ms = elapsed * 1000.0 / len(job.batch)
        masks: Sequence[InstanceMasks | None] = job.pending.masks or [None] * len(job.batch)
        keypoints: Sequence[np.ndarray | None] = [None] * len(job.batch)
        if job.pending.keypoints is not None:
            keypoints = job.pending.keypoints
        # Usually every row of the batch is finite and no class is filtered here: one check for the whole batch.
        clean = self.keep_classes is None and _all_finite(outputs)
        for prepared, rows, frame_masks, kpts in zip(job.batch, outputs, masks, keypoints, strict=True):
            if prepared.to_original is not None:
                rows, frame_masks, kpts = to_frame(prepared, rows, frame_masks, kpts)
            result = FrameResult.from_rows(prepared.frame, rows, self._names, per_frame_ms, frame_masks, kpts)
            if prepared.seen is not None:
                result = replace(result, seen=prepared.seen)
            if not clean or prepared.to_original is not None:
                result = self._filtered(result)
            self._last[prepared.stream_id] = result
            self.out.put(result)

    def _filtered(self, result: FrameResult) -> FrameResult:
        """Rows of the kept classes (``model.classes`` given as labels), finite numbers only."""
        boxes = result.boxes
        keep = np.isfinite(boxes).all(axis=1)  # a broken model's NaNs never reach the wire
        if self.keep_classes is not None:
            keep &= np.isin(boxes[:, 5].astype(np.int64), list(self.keep_classes))
        return result if keep.all() else result.subset(keep)


def _all_finite(outputs: Sequence[np.ndarray]) -> bool:
    """Every number in every image's rows is finite."""
    return not outputs or bool(np.isfinite(np.concatenate([np.ravel(rows) for rows in outputs])).all())


@dataclass(frozen=True, slots=True)
class StreamAdded:
    """A stream added at run time, announced to the publish stage through its state queue."""

    stream_id: str
    privacy: PrivacyConfig
    analytics: StreamAnalytics | None = None


@dataclass(frozen=True, slots=True)
class FaceLink:
    """The publish stage's side of the face thread: where it offers frames and collects faces."""

    jobs: BoundedQueue[Any]
    results: BoundedQueue[Any]
    every_n_frames: int
    settled: Callable[[], bool]
    """True when the face thread holds no job (checked before a stream's end is published)."""
    model: str
    """The face detector's name (``faces.<stream_id>`` messages), or ``""`` when the main model finds faces."""

    SETTLE_TIMEOUT_S = 30.0


def to_frame(
    prepared: PreparedFrame, rows: np.ndarray, masks: InstanceMasks | None, keypoints: np.ndarray | None = None
) -> tuple[np.ndarray, InstanceMasks | None, np.ndarray | None]:
    """Rows (boxes, then landmark pairs) and masks of a model that saw an operated-on image, in frame pixels."""
    assert prepared.to_original is not None
    back = prepared.to_original
    rows = map_boxes(np.asarray(rows, np.float32), back)
    if len(rows) and rows.shape[1] > 6:  # landmarks: x, y pairs after the six box columns
        points = rows[:, 6:].reshape(-1, 2)
        rows[:, 6:] = back(points.astype(np.float64)).reshape(len(rows), -1)
    h, w = prepared.frame.height, prepared.frame.width
    if len(rows):
        rows[:, [0, 2]] = np.clip(rows[:, [0, 2]], 0, w)
        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, h)
    if masks is not None:
        masks = InstanceMasks(masks.data, masks.source_hw, back)
    if keypoints is not None and len(keypoints):
        keypoints = keypoints.copy()
        xy = back(keypoints[..., :2].reshape(-1, 2).astype(np.float64))
        keypoints[..., :2] = xy.reshape((*keypoints.shape[:-1], 2))
    return rows, masks, keypoints


class PublishStage(StageThread):
    """Publishes results and lifecycle status; the last stage, it ends when every stream has ended."""

    def __init__(
        self,
        inp: BoundedQueue[Any],
        bus: BusPublisher,
        stream_ids: Sequence[str],
        model_name: str,
        engine_info: dict[str, Any],
        stop: threading.Event,
        on_failure: FailureHandler,
        wait_for_subscriber: bool = False,
        subscriber_timeout_s: float | None = None,
        sink: FrameSink | None = None,
        analytics: Mapping[str, StreamAnalytics] | None = None,
        thumbnail_quality: int | None = None,
        privacy: Mapping[str, PrivacyConfig] | None = None,
        mask_format: MaskFormat | None = None,
        faces: FaceLink | None = None,
        state_changes: BoundedQueue[Any] | None = None,
    ) -> None:
        super().__init__("publish", stop, on_failure)
        self.state_changes = state_changes
        """Live sources' :class:`~pipeline.supervision.StateChange` messages, sent as ``status.<stream_id>``."""
        self.faces = faces
        self.open_ended = False
        """Streams may be added at run time: keep going with none left, until the stop event."""
        self.waiting = False
        """Waiting for a first subscriber (``publish.wait_for_subscriber``): not beating, yet healthy."""
        self.on_latency: Callable[[str, float], None] | None = None
        """Called with each published frame's capture→publish seconds (metrics); ``None``: nobody listens."""
        self.face_seq: dict[str, int] = dict.fromkeys(stream_ids, 0)
        self.known_faces: dict[str, dict[int, Any]] = {sid: {} for sid in stream_ids}
        """Per stream, track id → what the face thread knows of that track's face (main model finds faces)."""
        self.latest_faces: dict[str, tuple[int, np.ndarray]] = {}
        """Per stream, the frame index and face boxes of the face thread's latest result."""
        self.mask_format = mask_format or MaskFormat()
        self.privacy = dict(privacy or {})
        """Per stream: what is redacted in thumbnails and recordings."""
        self.analytics = dict(analytics or {})
        """Per stream: tracking, lines, zones and events (absent when tracking is off)."""
        self.thumbnail_quality = thumbnail_quality
        """JPEG quality of event thumbnails; ``None``: no thumbnails."""
        self.sink: FrameSink = sink or NullSink()
        self.inp = inp
        self.bus = bus
        self.stream_ids = list(stream_ids)
        self.model_name = model_name
        self.engine_info = engine_info
        self.wait_for_subscriber = wait_for_subscriber
        self.subscriber_timeout_s = subscriber_timeout_s
        self.seq: dict[str, int] = dict.fromkeys(self.stream_ids, 0)
        self.ended: dict[str, EndOfStream] = {}
        self.first_publish_at: float | None = None
        self.last_latency_ms = 0.0
        self.last_objects = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.latency_ms_by_stream: dict[str, float] = {}

    def loop(self) -> None:
        try:
            if self.wait_for_subscriber:
                log.info("waiting for a subscriber on %s", self.bus.endpoint)
                self.waiting = True
                got_one = self.bus.wait_for_subscriber(self.stop_event, self.subscriber_timeout_s)
                self.waiting = False
                if not got_one and not self.stop_event.is_set():
                    log.warning("no subscriber within %s s; publishing anyway", self.subscriber_timeout_s)
            for sid in self.stream_ids:
                self._status(sid, "start", engine=self.engine_info)
            while (self.open_ended or len(self.ended) < len(self.stream_ids)) and not self.stop_event.is_set():
                self.beat()
                self._send_states()
                self._collect_faces()
                item = self.inp.get(GET_TIMEOUT_S)
                if isinstance(item, (FrameResult, EndOfStream)) and item.stream_id not in self.seq:
                    self._send_states()  # a stream added at run time: its StreamAdded is queued before its frames
                if isinstance(item, FrameResult):
                    started = time.perf_counter()
                    self._publish(item)
                    self.clock.add(time.perf_counter() - started)
                elif isinstance(item, EndOfStream):
                    self._end(item)
        finally:
            self.sink.close()
            for sid in self.stream_ids:
                if sid not in self.ended:
                    self._finish_analytics(sid)
                    self._status(sid, "stopped")

    def _publish(self, result: FrameResult) -> None:
        sid = result.stream_id
        now = time.time()
        if self.first_publish_at is None:
            self.first_publish_at = now
        everything = result  # with the boxes that only fed the tracker: all of them are redacted in images
        analytics = self.analytics.get(sid)
        analysis = analytics.process(result) if analytics is not None else None
        track_ids = None
        if analysis is not None:
            keep = analysis.published
            result = result.subset(keep)
            track_ids = analysis.track_ids[keep]
        annotations = self._face_annotations(result, track_ids)
        body = detections_body(result, self.seq[sid], self.model_name, now, track_ids, self.mask_format, annotations)
        self.bus.send(topic_for(DETECTIONS_TOPIC, sid), body, self.stop_event)
        self.seq[sid] += 1
        self._offer_faces(result, track_ids)
        pictured = self._pictured(everything, result, analysis.events if analysis is not None else [])
        if analysis is not None:
            for event in analysis.events:
                self._event(event, pictured)
            if analysis.counts is not None:
                self.bus.send(topic_for(COUNTS_TOPIC, sid), analysis.counts, self.stop_event)
        self.last_latency_ms = (now - result.frame.captured_at) * 1000.0
        self.latency_ms_by_stream[sid] = self.last_latency_ms
        self.latencies_ms.append(self.last_latency_ms)
        if self.on_latency is not None:
            self.on_latency(sid, self.last_latency_ms / 1000.0)
        self.last_objects = len(result)
        if pictured is not None:
            self.sink.write(pictured, track_ids)

    def _pictured(self, everything: FrameResult, published: FrameResult, events: list[Event]) -> FrameResult | None:
        """``published`` on the redacted frame, for the images of this frame that leave the box (the recording,
        thumbnails of new events); ``None`` when none will."""
        thumbnails = self.thumbnail_quality is not None and any(e.type == "new" for e in events)
        if isinstance(self.sink, NullSink) and not thumbnails:
            return None
        privacy = self.privacy.get(published.stream_id)
        if privacy is None:
            return published
        faces = self._recent_faces(published)
        return replace(published, frame=redacted(everything, privacy, faces).frame)

    def _event(self, event: Event, result: FrameResult | None = None) -> None:
        attachment = None  # ``result`` is already redacted (see _pictured)
        if self.thumbnail_quality is not None and result is not None and event.type == "new":
            attachment = thumbnail(result.frame.host_image(), event.box, self.thumbnail_quality)
        body = event.to_json()
        if attachment is not None:
            body["thumbnail"] = "jpeg"
        self.bus.send(topic_for(EVENTS_TOPIC, event.stream_id), body, self.stop_event, attachment)

    def _finish_analytics(self, stream_id: str) -> None:
        """Close the stream's open events and send its final counts."""
        analytics = self.analytics.pop(stream_id, None)
        if analytics is None:
            return
        events, counts = analytics.finish()
        for event in events:
            self._event(event)
        if analytics.counting:
            self.bus.send(topic_for(COUNTS_TOPIC, stream_id), counts, self.stop_event)

    def _send_states(self) -> None:
        queue = self.state_changes
        while queue is not None and (change := queue.get_nowait()) is not None:
            if isinstance(change, StreamAdded):
                self._add_stream(change)
                continue
            extra = {"attempt": change.attempt} if change.state in ("reconnecting", "offline") else {}
            if change.retry_in_s is not None:
                extra["retry_in_s"] = change.retry_in_s
            if change.reason:
                extra["reason"] = change.reason
            self._status(change.stream_id, change.state, **extra)

    def _add_stream(self, added: StreamAdded) -> None:
        """A stream added at run time: it arrives here (through the state queue) before any of its results."""
        sid = added.stream_id
        self.ended.pop(sid, None)
        if sid not in self.stream_ids:
            self.stream_ids.append(sid)
        self.seq[sid] = self.seq.get(sid, 0)  # a stream added again under an old id continues its seq
        self.face_seq.setdefault(sid, 0)
        self.known_faces.setdefault(sid, {})
        if added.analytics is not None:
            self.analytics[sid] = added.analytics
        self.privacy[sid] = added.privacy
        self._status(sid, "start", engine=self.engine_info)

    # -- faces ---------------------------------------------------------------------------------------------
    def _offer_faces(self, result: FrameResult, track_ids: np.ndarray | None) -> None:
        link = self.faces
        if link is None or result.frame.frame_index % link.every_n_frames:
            return
        ids = track_ids if track_ids is not None else np.full(len(result), -1, np.int64)
        link.jobs.put(FaceJob(result, ids))

    def _recent_faces(self, result: FrameResult) -> np.ndarray | None:
        """The face thread's latest face boxes for this stream while still recent (for redaction)."""
        link, recent = self.faces, self.latest_faces.get(result.stream_id)
        if link is None or recent is None:
            return None
        frame_index, boxes = recent
        fresh = result.frame.frame_index - frame_index <= 2 * link.every_n_frames
        return boxes if fresh else None

    def _face_annotations(self, result: FrameResult, track_ids: np.ndarray | None) -> list[dict[str, Any]] | None:
        """Identity (or anonymous id) of the main model's face detections whose track the face thread knows."""
        known = self.known_faces.get(result.stream_id)
        if not known or track_ids is None:
            return None
        return [known[t].annotation() if t in known else {} for t in track_ids.tolist()]

    def _collect_faces(self, settle: bool = False) -> None:
        """Publish what the face thread has found; with ``settle``, first wait until it is idle."""
        link = self.faces
        if link is None:
            return
        if settle:
            deadline = time.monotonic() + link.SETTLE_TIMEOUT_S
            while not link.settled() and time.monotonic() < deadline and not self.stop_event.is_set():
                time.sleep(0.01)
        while (found := link.results.get_nowait()) is not None:
            self._publish_faces(found)

    def _publish_faces(self, found: FaceResult) -> None:
        sid = found.stream_id
        self.latest_faces[sid] = (found.faces.frame.frame_index, found.faces.boxes[:, :4].copy())
        if link_model := (self.faces.model if self.faces else ""):
            body = detections_body(
                found.faces,
                self.face_seq[sid],
                link_model,
                time.time(),
                found.track_ids,
                self.mask_format,
                found.annotations() if any(w is not None for w in found.who) else None,
            )
            self.bus.send(topic_for(FACES_TOPIC, sid), body, self.stop_event)
            self.face_seq[sid] += 1
        else:
            known = self.known_faces[sid]
            for track, who in zip(found.track_ids.tolist(), found.who, strict=True):
                if who is not None:
                    known[track] = who
        for event in found.events:
            self._event(event)

    def _end(self, eos: EndOfStream) -> None:
        self._send_states()
        self._collect_faces(settle=True)
        self._finish_analytics(eos.stream_id)
        self.ended[eos.stream_id] = eos
        if eos.error is not None:
            self._status(eos.stream_id, "error", message=eos.error, frames=eos.frames)
        elif eos.stopped:
            self._status(eos.stream_id, "stopped", frames=eos.frames)
        else:
            self._status(eos.stream_id, "eos", frames=eos.frames)

    def _status(self, stream_id: str, event: str, **extra: Any) -> None:
        body = status_body(stream_id, event, time.time(), **redact_json(extra))
        self.bus.send(topic_for(STATUS_TOPIC, stream_id), body, self.stop_event)
