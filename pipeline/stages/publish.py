"""The publish stage: the last loop, which hands each finished frame to the sinks and sends each stream's status."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.ages import FrameAges
from pipeline.analytics.stream import StreamAnalytics
from pipeline.config import PrivacyConfig
from pipeline.messages import EndOfStream, FrameResult, ResultItem
from pipeline.queues import BoundedQueue
from pipeline.secrecy import redact_json
from pipeline.sinks import BusWriter, Published, SinkSet, StreamEnding
from pipeline.stages.base import GET_TIMEOUT_S, FailureHandler, Observe, StageThread
from pipeline.status import StreamStatus
from pipeline.supervision import StateChange

RETRYING = (StreamStatus.RECONNECTING, StreamStatus.OFFLINE)
"""States whose status says which attempt failed."""
LATENCY_WINDOW = 100_000
"""Capture→publish latencies kept for percentiles (the most recent ones)."""


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """What the publish stage does with one stream's frames before the sinks: analytics, and what is redacted."""

    stream_id: str
    privacy: PrivacyConfig | None = None
    analytics: StreamAnalytics | None = None
    """Tracking, lines, zones and events (``None`` when tracking is off)."""

    def current_counts(self) -> dict[str, Any] | None:
        """The stream's line and zone counts now, ``None`` without lines or zones."""
        analytics = self.analytics
        if analytics is None or not analytics.counting:
            return None
        return {"stream_id": self.stream_id, **analytics.running_counts()}


@dataclass(frozen=True, slots=True)
class StreamAdded:
    """A stream added at run time, announced to the publish stage through its state queue."""

    plan: StreamPlan


class PublishStage(StageThread):
    """Feeds results to the sinks and sends lifecycle statuses; it ends when every stream has ended (or, with
    ``open_ended``, when the pipeline stops: streams come and go at run time)."""

    def __init__(
        self,
        inp: BoundedQueue[ResultItem],
        plans: Sequence[StreamPlan],
        sinks: SinkSet,
        writer: BusWriter,
        stop: threading.Event,
        on_failure: FailureHandler,
        *,
        state_changes: BoundedQueue[StateChange | StreamAdded] | None = None,
        open_ended: bool = False,
        wait_for_subscriber: bool = False,
        subscriber_timeout_s: float | None = None,
        on_latency: Callable[[str, float], None] | None = None,
        observe: Observe | None = None,
    ) -> None:
        """``wait_for_subscriber``: hold the first message until someone subscribes (at most
        ``subscriber_timeout_s``). ``on_latency`` is called with each published frame's stream and capture→publish
        seconds (metrics)."""
        super().__init__("publish", stop, on_failure, observe)
        self.inp = inp
        self.plans: dict[str, StreamPlan] = {plan.stream_id: plan for plan in plans}
        self.sinks = sinks
        self.writer = writer
        self.state_changes = state_changes
        self.open_ended = open_ended
        self.wait_for_subscriber = wait_for_subscriber
        self.subscriber_timeout_s = subscriber_timeout_s
        self.on_latency = on_latency
        self.stream_ids = list(self.plans)
        self.seq: dict[str, int] = dict.fromkeys(self.stream_ids, 0)
        """Frames published per stream."""
        self.ended: dict[str, EndOfStream] = {}
        self.last_latency_ms = 0.0
        self.last_objects = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.latency_ms_by_stream: dict[str, float] = {}
        self.ages = FrameAges()
        """How old frames are when published (capture→publish, over the whole run)."""

    def loop(self) -> None:
        try:
            for sid in self.stream_ids:
                self.sinks.on_stream_added(sid)
            if self.wait_for_subscriber:
                self.writer.wait_for_subscriber(self.subscriber_timeout_s)
            for sid in self.stream_ids:
                self._status(sid, "start", engine=self.writer.engine_info)
            while (self.open_ended or len(self.ended) < len(self.stream_ids)) and not self.stop_event.is_set():
                self.beat()
                self._send_states()
                self.sinks.poll()
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
            for sid in self.stream_ids:
                if sid not in self.ended:
                    self.sinks.on_stream_end(self._ending(sid))
                    self._status(sid, "stopped")
            self.sinks.close()

    def _publish(self, result: FrameResult) -> None:
        sid = result.stream_id
        now = time.time()
        plan = self.plans.get(sid)
        analysis = plan.analytics.process(result) if plan is not None and plan.analytics is not None else None
        if analysis is None:
            published = Published(result, result, privacy=plan.privacy if plan else None)
        else:
            keep = analysis.published
            published = Published(
                result.subset(keep),
                result,
                analysis.track_ids[keep],
                self.sinks.mark(tuple(analysis.events)) if analysis.events else (),
                analysis.counts,
                plan.privacy if plan else None,
            )
        self.sinks.on_result(published)
        self.seq[sid] += 1
        latency_ms = (now - result.frame.captured_at) * 1000.0
        self.last_latency_ms = self.latency_ms_by_stream[sid] = latency_ms
        self.latencies_ms.append(latency_ms)
        self.ages.add(latency_ms / 1000.0)
        if self.on_latency is not None:
            self.on_latency(sid, latency_ms / 1000.0)
        self.last_objects = len(published.result)

    def _status(self, stream_id: str, event: str, **extra: Any) -> None:
        """A stream's status, redacted once: on the bus, then to the other sinks."""
        clean = redact_json(extra)
        at = self.writer.status(stream_id, event, **clean)
        self.sinks.on_status(stream_id, event, clean, at)

    def _ending(self, stream_id: str) -> StreamEnding:
        """Close the stream's open events and take its final counts."""
        plan = self.plans.get(stream_id)
        analytics = plan.analytics if plan is not None else None
        if analytics is None:
            return StreamEnding(stream_id)
        events, counts = analytics.finish()
        return StreamEnding(stream_id, self.sinks.mark(tuple(events)), counts if analytics.counting else None)

    def _send_states(self) -> None:
        queue = self.state_changes
        while queue is not None and (change := queue.get_nowait()) is not None:
            if isinstance(change, StreamAdded):
                self._add_stream(change.plan)
                continue
            extra: dict[str, Any] = {"attempt": change.attempt} if change.state in RETRYING else {}
            if change.retry_in_s is not None:
                extra["retry_in_s"] = change.retry_in_s
            if change.reason:
                extra["reason"] = change.reason
            self._status(change.stream_id, change.state, **extra)

    def _add_stream(self, plan: StreamPlan) -> None:
        """A stream added at run time: it arrives here (through the state queue) before any of its results."""
        sid = plan.stream_id
        self.ended.pop(sid, None)
        if sid not in self.stream_ids:
            self.stream_ids.append(sid)
        self.plans[sid] = plan
        self.seq.setdefault(sid, 0)
        self.sinks.on_stream_added(sid)
        self._status(sid, "start", engine=self.writer.engine_info)

    def _end(self, eos: EndOfStream) -> None:
        self._send_states()
        self.sinks.on_stream_end(self._ending(eos.stream_id))
        self.ended[eos.stream_id] = eos
        if eos.error is not None:
            self._status(eos.stream_id, "error", message=eos.error, frames=eos.frames)
        elif eos.stopped:
            self._status(eos.stream_id, "stopped", frames=eos.frames)
        else:
            self._status(eos.stream_id, "eos", frames=eos.frames)
