"""What a running pipeline is made of (its sources, stage threads and queues) and what is read from them: each
stream's state, a progress snapshot and the run's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engines.base import EngineInfo
from pipeline.ages import AgeCounts, summaries
from pipeline.imageops import ImageOps
from pipeline.motion import MotionGate
from pipeline.queues import QueueView
from pipeline.report import Progress, RunReport, StreamReport, frames_to_take, percentiles
from pipeline.sources import Source
from pipeline.stages import CaptureStage, InferStage, PreprocessStage, PublishStage, StageClock, StageThread
from pipeline.status import StreamStatus
from pipeline.view import StreamState

if TYPE_CHECKING:
    from pipeline.faces.stage import FaceStage
    from pipeline.media.packets import PacketRing
    from pipeline.media.store import EventStore
    from pipeline.secondary import SecondaryStage


@dataclass
class Parts:
    """A pipeline's parts as they are built: start-up fills them, a stream added at run time adds to them."""

    sources: dict[str, Source] = field(default_factory=dict)
    captures: list[CaptureStage] = field(default_factory=list)
    preprocess: list[PreprocessStage] = field(default_factory=list)
    infer: InferStage | None = None
    publish: PublishStage | None = None
    faces: FaceStage | None = None
    secondary: SecondaryStage | None = None
    threads: list[StageThread] = field(default_factory=list)
    """Every stage thread, publish first, capture threads last (the order they are joined in)."""
    queues: list[QueueView] = field(default_factory=list)
    image_ops: dict[str, ImageOps] = field(default_factory=dict)
    """Per stream: the image operations before the model, with their running costs."""
    motion_gates: dict[str, MotionGate] = field(default_factory=dict)
    """Per stream: motion gating, with its frame and gated counts."""
    event_store: EventStore | None = None
    """Events kept on disk (``events.store``)."""
    packet_rings: dict[str, PacketRing] = field(default_factory=dict)
    """Per stream, with ``events.clips``: its compressed packets, where its source keeps them."""

    def drops(self, stream_id: str) -> dict[str, int]:
        """Frames of one stream dropped so far, per queue that can drop them (0 until the first)."""
        counts = {q.name: q.drops().get(stream_id) for q in self.queues}
        return {name: n for name, n in counts.items() if n is not None}

    def stream_states(self) -> list[StreamState]:
        """Each stream's state and counters now (cheap; read by metrics scrapes and health checks)."""
        publish = self.publish
        out = []
        for capture in self.captures:
            sid = capture.stream_id
            source = self.sources.get(sid)
            ended = publish is not None and sid in publish.ended
            state = StreamStatus.ENDED if ended else getattr(source, "state", None) or StreamStatus.RUNNING
            out.append(
                StreamState(
                    sid,
                    state,
                    capture.frames,
                    publish.seq.get(sid, 0) if publish else 0,
                    int(getattr(source, "reconnects", 0)),
                    self.drops(sid),
                    frames_to_take(getattr(source, "total_frames", None), capture.max_frames),
                    publish.latency_ms_by_stream.get(sid, 0.0) if publish else 0.0,
                )
            )
        return out

    def progress(self, elapsed_s: float) -> Progress:
        """A cheap snapshot for live displays."""
        publish = self.publish
        return Progress(
            published=sum(publish.seq.values()) if publish else 0,
            elapsed_s=elapsed_s,
            latency_ms=publish.last_latency_ms if publish else 0.0,
            objects=publish.last_objects if publish else 0,
            drops=sum(sum(q.drops().values()) for q in self.queues),
        )

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each queue now."""
        return {q.name: len(q) for q in self.queues}

    def sink_failures(self) -> dict[str, int]:
        """Failed calls per sink so far (0 for each sink that has not failed)."""
        return dict(self.publish.sinks.failures) if self.publish is not None else {}

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per stream with lines or zones, its running counts now (the body of its next ``counts`` message)."""
        publish = self.publish
        if publish is None:
            return {}
        return {sid: counts for sid, plan in list(publish.plans.items()) if (counts := plan.current_counts())}

    def sink_drops(self) -> dict[str, int]:
        """Messages each sink dropped so far (a broker or endpoint away longer than its outbox lasts)."""
        return self.publish.sinks.drops() if self.publish is not None else {}

    def report(self, engine: EngineInfo, failure: str | None, elapsed_s: float) -> RunReport:
        """The whole run: each stream's counts and end, time per stage, latency, batches and queue peaks."""
        publish, infer = self.publish, self.infer
        streams = []
        for capture in self.captures:
            sid = capture.stream_id
            eos = publish.ended.get(sid) if publish else None
            streams.append(
                StreamReport(
                    stream_id=sid,
                    frames=capture.frames,
                    published=publish.seq.get(sid, 0) if publish else 0,
                    error=eos.error if eos else None,
                    stopped=eos is None or eos.stopped,
                    drops={queue: n for queue, n in self.drops(sid).items() if n},
                    refused=capture.refused,
                )
            )
        stage_ms = {
            "capture": StageClock.ms_per_item([c.clock for c in self.captures]),
            "preprocess": StageClock.ms_per_item([p.clock for p in self.preprocess]),
            "infer": StageClock.ms_per_item([infer.clock] if infer else []),
            "publish": StageClock.ms_per_item([publish.clock] if publish else []),
        }
        for extra in (self.faces, self.secondary):
            if extra is not None:
                stage_ms[extra.name] = StageClock.ms_per_item([extra.clock])
        return RunReport(
            tuple(streams),
            elapsed_s,
            engine,
            failure,
            stage_ms=stage_ms,
            latency_ms=percentiles(list(publish.latencies_ms) if publish else []),
            mean_batch=round(infer.clock.items / infer.batches, 2) if infer and infer.batches else 0.0,
            queue_peaks={q.name: q.high_water for q in self.queues},
            face_frames=self.faces.clock.items if self.faces is not None else 0,
            sink_failures={name: n for name, n in self.sink_failures().items() if n},
            sink_drops={name: n for name, n in self.sink_drops().items() if n},
            frame_age_ms=summaries(self.frame_ages()),
        )

    def frame_ages(self) -> dict[str, AgeCounts]:
        """How old frames were at each hand-off so far (:mod:`pipeline.ages`), hops the run has no stage for left
        out."""
        publish, infer = self.publish, self.infer
        ages = {"preprocess": AgeCounts.of(p.ages for p in self.preprocess)}
        if infer is not None:
            ages |= {"batched": AgeCounts.of([infer.batched_ages]), "inferred": AgeCounts.of([infer.inferred_ages])}
        if publish is not None:
            ages["published"] = AgeCounts.of([publish.ages])
        return ages
