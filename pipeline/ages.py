"""How old frames are at each hand-off: where a frame's capture→publish time goes.

Each stage thread fills a :class:`FrameAges` histogram for the hop it owns (one writer each, so no lock): a
frame's age when preprocess takes it from its capture queue, when the model is given its batch, when the batch's
results are out, and when it is published. The difference between two hops is the time spent between them: in a
queue, or waiting for a batch. Ages are kept in 1 ms buckets, so a histogram costs one addition per frame and a
fixed amount of memory, and two snapshots give the ages of the frames in between (a benchmark's window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

BUCKET_MS = 1.0
BUCKETS = 2000
"""Ages up to 2 s in 1 ms buckets; older frames count in the last bucket (the maximum stays exact)."""
HOPS = ("preprocess", "batched", "inferred", "published")
"""The hand-offs, in a frame's order: taken by preprocess, given to the model, out of the model, published."""


class FrameAges:
    """Ages of the frames one thread handed on at one hop (written by that thread only)."""

    __slots__ = ("counts", "max_ms")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.max_ms = 0.0

    def add(self, age_s: float) -> None:
        ms = age_s * 1000.0
        self.counts[min(BUCKETS - 1, max(0, int(ms / BUCKET_MS)))] += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def add_all(self, captured_at: Iterable[float], now: float) -> None:
        """One age per frame captured at each of ``captured_at`` (Unix times), all handed on at ``now``."""
        for at in captured_at:
            self.add(now - at)


@dataclass(frozen=True)
class AgeCounts:
    """A snapshot of one hop's ages (the sum of its threads' histograms)."""

    counts: tuple[int, ...]
    max_ms: float

    @staticmethod
    def of(histograms: Iterable[FrameAges]) -> AgeCounts:
        totals = [0] * BUCKETS
        most = 0.0
        for h in histograms:
            totals = [a + b for a, b in zip(totals, h.counts, strict=True)]
            most = max(most, h.max_ms)
        return AgeCounts(tuple(totals), most)

    def since(self, earlier: AgeCounts) -> AgeCounts:
        """The frames counted after ``earlier``; their maximum is the upper edge of their oldest bucket (within
        1 ms; for the last bucket, this snapshot's maximum)."""
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        oldest = max((i for i, n in enumerate(counts) if n), default=-1)
        edge = self.max_ms if oldest == BUCKETS - 1 else (oldest + 1) * BUCKET_MS
        return AgeCounts(counts, min(self.max_ms, edge))

    def summary(self) -> dict[str, float]:
        """Frames, and p50, p90, p99 ages in ms (each its bucket's upper edge) and the largest; empty for none."""
        frames = sum(self.counts)
        if not frames:
            return {}
        out: dict[str, float] = {"frames": frames}
        wanted = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            while wanted and seen >= wanted[0][1] * frames:
                out[wanted.pop(0)[0]] = round(min((i + 1) * BUCKET_MS, self.max_ms), 1)
            if not wanted:
                break
        out["max"] = round(self.max_ms, 1)
        return out


def summaries(
    snapshot: Mapping[str, AgeCounts], earlier: Mapping[str, AgeCounts] | None = None
) -> dict[str, dict[str, float]]:
    """Each hop's :meth:`AgeCounts.summary` (since ``earlier``, where given), hops without frames left out."""
    out = {}
    for hop, counts in snapshot.items():
        if earlier is not None and hop in earlier:
            counts = counts.since(earlier[hop])
        if summary := counts.summary():
            out[hop] = summary
    return out
