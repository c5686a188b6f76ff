"""What a sink is: the published frame it is handed, the interface it implements, and the set that isolates them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.analytics.events import Event
from pipeline.config import PrivacyConfig
from pipeline.messages import FrameResult
from pipeline.secrecy import redact

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Published:
    """One frame's results as they leave the pipeline, with what analytics made of them."""

    result: FrameResult
    """The detections published (at or over the model's threshold when tracking keeps weaker ones)."""
    everything: FrameResult
    """Every detection, the ones that only fed the tracker too: all of them are redacted in images."""
    track_ids: np.ndarray | None = None
    """One per row of ``result`` when tracking is on."""
    events: tuple[Event, ...] = ()
    counts: dict[str, Any] | None = None
    """The stream's line and zone counts when they are due."""
    privacy: PrivacyConfig | None = None
    """What the stream redacts in images that leave the box."""

    @property
    def stream_id(self) -> str:
        return self.result.stream_id


@dataclass(frozen=True, slots=True)
class StreamEnding:
    """What a stream leaves at its end: the events analytics closes and its final counts."""

    stream_id: str
    events: tuple[Event, ...] = ()
    counts: dict[str, Any] | None = None


class ResultSink:
    """Something done with every published frame (a base class: each method does nothing until overridden).

    The publish stage calls a sink from its one thread. A sink whose
    ``essential`` is false is isolated: its failures are logged and counted,
    and the other sinks go on. An essential one (the bus: results that cannot
    leave the box are lost data) stops the pipeline.
    """

    name = "sink"
    essential = False

    @property
    def drops(self) -> int:
        """Messages the sink could not deliver and dropped (a broker or endpoint away too long), counted."""
        return 0

    def mark(self, events: tuple[Event, ...]) -> tuple[Event, ...]:
        """The events with what this sink adds to them (ids of what it makes of them), before any sink sees them."""
        return events

    def on_stream_added(self, stream_id: str) -> None:
        """A stream starts: each configured one as publishing begins, one added at run time when it joins."""

    def on_result(self, published: Published) -> None:
        """One published frame."""

    def on_status(self, stream_id: str, event: str, extra: Mapping[str, Any], at: float) -> None:
        """A stream's status (``status`` messages on the bus: ``start``, ``online``, ``eos``…), already redacted."""

    def poll(self) -> None:
        """Work between frames (called on each turn of the publish loop)."""

    def on_stream_end(self, ending: StreamEnding) -> None:
        """A stream has ended: after its last result, before its final status."""

    def close(self) -> None:
        """The pipeline stops: release what the sink holds."""


@dataclass
class SinkSet:
    """The publish stage's sinks, called in order; one failing is logged and counted, not fatal to the others."""

    sinks: Sequence[ResultSink]
    failures: dict[str, int] = field(default_factory=dict)
    """Failed calls per sink name (a sink's first failure is logged with its traceback, later ones counted)."""

    def __post_init__(self) -> None:
        self.failures = {sink.name: 0 for sink in self.sinks}

    def mark(self, events: tuple[Event, ...]) -> tuple[Event, ...]:
        """Every sink's :meth:`ResultSink.mark` in turn (one failing leaves the events as they were)."""
        for sink in self.sinks:
            try:
                events = sink.mark(events)
            except Exception as exc:
                self._failed(sink, exc)
        return events

    def on_stream_added(self, stream_id: str) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.on_stream_added, stream_id)

    def on_result(self, published: Published) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.on_result, published)

    def on_status(self, stream_id: str, event: str, extra: Mapping[str, Any], at: float) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.on_status, stream_id, event, extra, at)

    def drops(self) -> dict[str, int]:
        """Messages each sink dropped so far."""
        return {sink.name: sink.drops for sink in self.sinks}

    def poll(self) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.poll)

    def on_stream_end(self, ending: StreamEnding) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.on_stream_end, ending)

    def close(self) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.close)

    def _guard(self, sink: ResultSink, method: Any, *args: Any) -> None:
        if sink.essential:
            method(*args)
            return
        try:
            method(*args)
        except Exception as exc:  # an isolated sink: logged and counted, the frame goes on to the others
            self._failed(sink, exc)

    def _failed(self, sink: ResultSink, exc: Exception) -> None:
        if sink.essential:
            raise exc
        self.failures[sink.name] = count = self.failures.get(sink.name, 0) + 1
        if count == 1:
            log.warning("sink '%s' failed (later failures are only counted): %s", sink.name, redact(str(exc)))
            log.debug("sink '%s' failure", sink.name, exc_info=exc)
