"""What a pipeline reports: a snapshot while it runs (:class:`Progress`) and the whole run at the end
(:class:`RunReport`, one :class:`StreamReport` per stream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engines.base import EngineInfo


@dataclass(frozen=True)
class StreamReport:
    stream_id: str
    frames: int
    published: int
    error: str | None
    stopped: bool
    drops: dict[str, int] = field(default_factory=dict)
    """Dropped frames by queue name."""
    refused: bool = False
    """The source refused for good before its first frame (a wrong path or password): bad input."""


@dataclass(frozen=True)
class RunReport:
    streams: tuple[StreamReport, ...]
    elapsed_s: float
    engine: EngineInfo
    failure: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    """Busy time per frame of each stage (capture is decode/read time)."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Capture→publish latency percentiles (p50, p90, p99, max)."""
    mean_batch: float = 1.0
    queue_peaks: dict[str, int] = field(default_factory=dict)
    """The most items each queue held at once (a queue at its bound means the next stage is the bottleneck)."""
    face_frames: int = 0
    """Frames the face thread processed (``faces`` config)."""
    sink_failures: dict[str, int] = field(default_factory=dict)
    """Failed calls of each sink that failed (a failing sink is isolated: the others and the run go on)."""
    sink_drops: dict[str, int] = field(default_factory=dict)
    """Messages each sink that dropped any could not deliver (its broker or endpoint away past its outbox)."""
    frame_age_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """How old frames were at each hand-off (:data:`pipeline.ages.HOPS`): frames, p50, p90, p99, max."""

    @property
    def ok(self) -> bool:
        return self.failure is None and all(s.error is None for s in self.streams)

    @property
    def frames_published(self) -> int:
        return sum(s.published for s in self.streams)


@dataclass(frozen=True)
class Progress:
    published: int
    elapsed_s: float
    latency_ms: float
    objects: int
    drops: int


PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def frames_to_take(total: int | None, max_frames: int | None) -> int | None:
    """The smaller of a source's length and a stream's ``max_frames``, where known."""
    known = [n for n in (total, max_frames) if n is not None]
    return min(known) if known else None


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` (empty when there are none)."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {name: ordered[min(len(ordered) - 1, int(q * len(ordered)))] for name, q in PERCENTILES}
    out["max"] = ordered[-1]
    return {name: round(v, 2) for name, v in out.items()}
