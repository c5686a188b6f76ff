"""What observers see of a running pipeline: metrics, health, the console and the control endpoint depend on
these protocols, not on :class:`~pipeline.runner.Pipeline`, so none of them imports the runner that starts them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.status import StreamStatus

if TYPE_CHECKING:
    from engines.base import DetectionEngine
    from pipeline.bus import BusPublisher
    from pipeline.config import StreamConfig
    from pipeline.imageops import ImageOps
    from pipeline.media.store import EventStore
    from pipeline.motion import MotionGate
    from pipeline.stages import PublishStage, StageThread


@dataclass(frozen=True, slots=True)
class StreamState:
    """One stream as metrics and health checks see it."""

    stream_id: str
    state: StreamStatus
    captured: int
    published: int
    reconnects: int
    drops: dict[str, int]
    total: int | None = None
    """Frames the stream will take: what the source holds (files, folders, scenes), capped by ``max_frames``;
    ``None`` for a live source without ``max_frames``."""
    latency_ms: float = 0.0
    """Capture→publish latency of the stream's last published frame."""


class PipelineView(Protocol):
    """A running pipeline, read-only: its streams, stages, queues, engine and bus."""

    @property
    def engine(self) -> DetectionEngine | None: ...

    @property
    def bus(self) -> BusPublisher | None: ...

    @property
    def image_ops(self) -> Mapping[str, ImageOps]: ...

    @property
    def motion_gates(self) -> Mapping[str, MotionGate]: ...

    @property
    def stages(self) -> Sequence[StageThread]: ...

    @property
    def publisher(self) -> PublishStage | None: ...

    @property
    def failure(self) -> str | None: ...

    def stream_states(self) -> list[StreamState]: ...

    def queue_depths(self) -> dict[str, int]: ...

    def sink_failures(self) -> dict[str, int]: ...

    def sink_drops(self) -> dict[str, int]: ...

    @property
    def event_store(self) -> EventStore | None:
        """Events kept on disk (``events.store``), ``None`` when not kept."""
        ...

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per stream with lines or zones, its line and zone counts now."""
        ...


class PipelineControl(PipelineView, Protocol):
    """A running pipeline that takes streams and lets them go (the control endpoint's side)."""

    def add_stream(self, stream: StreamConfig) -> None: ...

    def remove_stream(self, stream_id: str) -> None: ...
