"""Prometheus metrics for a running pipeline (``prometheus-client``); every name starts with ``edgesight_``.

Counters and gauges are read from the pipeline's own counters when Prometheus
scrapes (a custom collector: nothing extra on the frame path). Only the two
histograms are fed per frame: capture→publish latency, and each stage's time
per frame (through the stage clocks' observer hook). :class:`NullMetrics` is
what a pipeline without ``--metrics-port`` gets.

Each stream's counters are series from its start, at 0 (drops per queue that
can drop its frames, bus drops of its detections, reconnects, image-operation
time), so that ``rate()`` and alerts work before anything has gone wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.status import StreamStatus

if TYPE_CHECKING:
    from pipeline.stages.base import Observe
    from pipeline.view import PipelineView

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NullMetrics:
    """Metrics off: attaches nothing, exports nothing."""

    def attach(self, pipeline: PipelineView) -> None:
        pass

    def stage_observer(self, kind: str) -> Observe | None:
        return None

    def exposition(self) -> bytes:
        return b""


class PrometheusMetrics:
    """The pipeline's metrics in their own registry (so tests and several pipelines never collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "edgesight_latency_seconds",
            "Capture to publish time of each published frame",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_time = Histogram(
            "edgesight_stage_seconds",
            "Time per frame in each stage (capture is decode time; infer is per frame of a batch)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self._pipeline: PipelineView | None = None
        self._latency_by_stream: dict[str, Any] = {}

    def observe_latency(self, stream_id: str, seconds: float) -> None:
        """One published frame's capture→publish time (the publish stage's ``on_latency``)."""
        child = self._latency_by_stream.get(stream_id)
        if child is None:
            child = self._latency_by_stream[stream_id] = self.latency.labels(stream_id)
        child.observe(seconds)

    def attach(self, pipeline: PipelineView) -> None:
        """Register the collector that reads a started pipeline's counters (its stages feed the histograms)."""
        self._pipeline = pipeline
        for state in pipeline.stream_states():  # each stream's latency series from its start
            self._latency_by_stream.setdefault(state.stream_id, self.latency.labels(state.stream_id))
        self.registry.register(_PipelineCollector(pipeline))

    def stage_observer(self, kind: str) -> Observe:
        """What a stage of ``kind`` (``capture``, ``preprocess``, ``infer``, …) is made with to feed its time per frame
        into the stage histogram."""
        observe: Observe = self.stage_time.labels(kind).observe
        return observe

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _PipelineCollector:
    """Reads the pipeline's counters at scrape time."""

    def __init__(self, pipeline: PipelineView) -> None:
        self._pipeline = pipeline

    def describe(self) -> list[Any]:
        return []  # collected on demand; no fixed description needed at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        from pipeline.schema import DETECTIONS_TOPIC, topic_for

        p = self._pipeline
        streams = p.stream_states()
        captured = CounterMetricFamily("edgesight_frames_captured", "Frames read from each source", labels=["stream"])
        published = CounterMetricFamily(
            "edgesight_frames_published", "Frames whose results were published", labels=["stream"]
        )
        dropped = CounterMetricFamily(
            "edgesight_frames_dropped", "Frames dropped, by queue and reason", labels=["stream", "queue", "reason"]
        )
        reconnects = CounterMetricFamily("edgesight_reconnects", "Times a live source reconnected", labels=["stream"])
        state = GaugeMetricFamily(
            "edgesight_stream_state", "1 for each stream's current state", labels=["stream", "state"]
        )
        for s in streams:
            captured.add_metric([s.stream_id], s.captured)
            published.add_metric([s.stream_id], s.published)
            reconnects.add_metric([s.stream_id], s.reconnects)
            for queue, n in s.drops.items():
                dropped.add_metric([s.stream_id, queue, "queue_full_drop_oldest"], n)
            for status in StreamStatus:
                state.add_metric([s.stream_id, status.value], 1.0 if s.state == status else 0.0)
        yield from (captured, published, dropped, reconnects, state)

        op_time = CounterMetricFamily(
            "edgesight_image_op_seconds", "Time spent in each image operation before the model", labels=["stream", "op"]
        )
        op_frames = CounterMetricFamily(
            "edgesight_image_op_frames", "Frames through image operations", labels=["stream"]
        )
        for sid, ops in dict(p.image_ops).items():
            op_frames.add_metric([sid], ops.calls)
            for name, seconds in dict(ops.costs).items():
                op_time.add_metric([sid, name], seconds)
        yield from (op_time, op_frames)

        gated = CounterMetricFamily(
            "edgesight_frames_gated", "Still frames motion gating kept from the model", labels=["stream"]
        )
        for sid, gate in dict(p.motion_gates).items():
            gated.add_metric([sid], gate.gated)
        yield gated

        depth = GaugeMetricFamily("edgesight_queue_depth", "Items waiting in each queue", labels=["queue"])
        for queue, n in p.queue_depths().items():
            depth.add_metric([queue], n)
        yield depth

        bus_dropped = CounterMetricFamily(
            "edgesight_bus_dropped", "Messages the ZeroMQ publisher dropped (send queue full)", labels=["topic"]
        )
        sent = CounterMetricFamily("edgesight_bus_sent", "Messages sent on the ZeroMQ bus")
        if p.bus is not None:
            bus_drops = {topic_for(DETECTIONS_TOPIC, s.stream_id): 0 for s in streams}  # every stream from the start
            bus_drops.update(p.bus.dropped)
            for topic, n in bus_drops.items():
                bus_dropped.add_metric([topic], n)
            sent.add_metric([], p.bus.sent)
        yield from (bus_dropped, sent)

        sink_failures = CounterMetricFamily(
            "edgesight_sink_failures", "Failed calls of each result sink (isolated: the others go on)", labels=["sink"]
        )
        for name, n in p.sink_failures().items():
            sink_failures.add_metric([name], n)
        yield sink_failures

        sink_drops = CounterMetricFamily(
            "edgesight_sink_dropped", "Messages each sink dropped (its broker or endpoint away)", labels=["sink"]
        )
        for name, n in p.sink_drops().items():
            sink_drops.add_metric([name], n)
        yield sink_drops

        if p.engine is not None:
            info = p.engine.info
            engine = InfoMetricFamily("edgesight_engine", "The loaded inference engine")
            engine.add_metric(
                [],
                {
                    "backend": info.backend,
                    "device": info.device,
                    "precision": info.precision,
                    "model": info.model,
                    "task": info.task,
                    "max_batch": str(info.max_batch),
                },
            )
            yield engine
