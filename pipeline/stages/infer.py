"""The infer stage: loads the engine, gathers batches across streams and turns the engine's rows into results."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engines.base import DetectionEngine, FrameFormat, PendingDetections
from engines.masks import InstanceMasks
from pipeline.ages import FrameAges
from pipeline.errors import ConfigError
from pipeline.imageops import map_boxes
from pipeline.messages import EndOfStream, FrameResult, PreparedFrame, PreparedItem, ResultItem
from pipeline.queues import BoundedQueue, StreamCount
from pipeline.stages.base import GET_TIMEOUT_S, FailureHandler, Observe, StageThread

log = logging.getLogger(__name__)


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
        inp: BoundedQueue[PreparedItem],
        out: BoundedQueue[ResultItem],
        streams: int | StreamCount,
        stop: threading.Event,
        on_failure: FailureHandler,
        load: Callable[[], DetectionEngine],
        classes: Sequence[int | str] | None = None,
        batch_timeout_s: float = 0.0,
        warmup_formats: Callable[[], Sequence[FrameFormat]] = tuple,
        observe: Observe | None = None,
        reuses: Container[str] = (),
    ) -> None:
        """``reuses``: the streams whose still frames may publish their last detections again (motion gating); a
        live view, so streams added at run time join it."""
        super().__init__("infer", stop, on_failure, observe)
        self._formats = warmup_formats
        """The sources' frame formats, which the engine runs blank frames of before real ones (see ``warmup``): asked
        for once the engine has loaded (the sources open meanwhile); raises why not when start-up failed."""
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
        self.batched_ages = FrameAges()
        """How old frames are when their batch goes to the model..."""
        self.inferred_ages = FrameAges()
        """...and when its results are out."""
        self._last: dict[str, FrameResult] = {}
        """Per stream in ``reuses``: its last result. Other streams' results (and their frames, which may be leased
        decoder slots) are let go as soon as publishing is done with them."""
        self._reuses = reuses
        self._load = load
        self._classes = classes
        self.loaded: Future[DetectionEngine] = Future()
        self.model_loaded = threading.Event()
        """Set once the engine has loaded, before it asks for the formats to warm up on."""
        self.keep_classes: frozenset[int] | None = None
        self._names: dict[int, str] = {}
        self._warmed: set[tuple[int, ...]] = set()

    def run(self) -> None:
        engine: DetectionEngine | None = None
        try:
            start = time.perf_counter()
            engine = self._load()
            loaded = time.perf_counter()
            self.model_loaded.set()
            self.batch_size = max(1, engine.info.max_batch)
            self.overlaps = engine.info.asynchronous
            self._names = engine.info.names
            self.keep_classes = resolve_classes(self._classes, self._names)
            formats = tuple(self._formats())
            self._warmed = {fmt.shape for fmt in formats}
            ready = time.perf_counter()
            engine.warmup(formats)
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

    @property
    def warmed_shapes(self) -> frozenset[tuple[int, ...]]:
        """The frame shapes the engine has been warmed up on so far."""
        return frozenset(self._warmed)

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
        self.batched_ages.add_all((p.frame.captured_at for p in batch), time.time())
        start = time.perf_counter()
        pending = self.engine.submit([p.model_input for p in batch], [p.shape for p in batch])
        return _InFlight(batch, pending, time.perf_counter() - start)

    def _finish(self, job: _InFlight) -> None:
        start = time.perf_counter()
        outputs = job.pending.result()
        self.inferred_ages.add_all((p.frame.captured_at for p in job.batch), time.time())
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
            if prepared.stream_id in self._reuses:
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
