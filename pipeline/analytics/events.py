"""Events: typed, frozen records of what tracked objects did, with a ``new`` → ``update`` → ``end`` lifecycle.

``line_cross``, ``zone_enter``, ``zone_exit`` and ``identity`` (a face track
recognized as an enrolled person) are instantaneous: a single ``new``.
``object`` (a tracked object's whole life) and ``loiter`` (an object staying in
a zone past its threshold) open with ``new``, may send ``update`` while they
last, and close with ``end``. Every event has a stable ``event_id``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pipeline.schema import EVENT_SCHEMA

EventType = Literal["new", "update", "end"]
EventKind = Literal["object", "line_cross", "zone_enter", "zone_exit", "loiter", "identity"]


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Observation:
    """One tracked detection in one frame."""

    track_id: int
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    frame_index: int
    pts_ms: float
    at: float
    """Unix time the frame was captured."""


@dataclass(frozen=True, slots=True)
class Event:
    """One message on ``events.<stream_id>``."""

    type: EventType
    event_id: str
    kind: EventKind
    stream_id: str
    track_id: int
    label: str
    class_id: int
    started_at: float
    ended_at: float | None
    frame_index: int
    pts_ms: float
    box: tuple[float, float, float, float]
    """The best (most confident) box of the object in this event so far."""
    score: float
    line: str | None = None
    zone: str | None = None
    direction: Literal["in", "out"] | None = None
    dwell_s: float | None = None
    """Time inside the zone (``zone_exit``, ``loiter``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema": EVENT_SCHEMA,
            "type": self.type,
            "event_id": self.event_id,
            "kind": self.kind,
            "stream_id": self.stream_id,
            "track_id": self.track_id,
            "label": self.label,
            "class_id": self.class_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "frame_index": self.frame_index,
            "pts_ms": round(self.pts_ms, 3),
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 6),
        }
        for key in ("line", "zone", "direction"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.dwell_s is not None:
            body["dwell_s"] = round(self.dwell_s, 3)
        body.update(self.extra)
        return body


class OpenEvent:
    """An event that lasts (``object``, ``loiter``): remembers its best observation and when it last spoke."""

    def __init__(self, kind: EventKind, stream_id: str, first: Observation, zone: str | None = None) -> None:
        self.kind: EventKind = kind
        self.stream_id = stream_id
        self.event_id = new_event_id()
        self.first = first
        self.best = first
        self.last = first
        self.zone = zone
        self.last_sent_pts = first.pts_ms

    def observe(self, obs: Observation) -> None:
        self.last = obs
        if obs.score > self.best.score:
            self.best = obs

    def event(self, type_: EventType, dwell_s: float | None = None) -> Event:
        best, last = self.best, self.last
        return Event(
            type=type_,
            event_id=self.event_id,
            kind=self.kind,
            stream_id=self.stream_id,
            track_id=best.track_id,
            label=best.label,
            class_id=best.class_id,
            started_at=self.first.at,
            ended_at=last.at if type_ == "end" else None,
            frame_index=last.frame_index,
            pts_ms=last.pts_ms,
            box=best.box,
            score=best.score,
            zone=self.zone,
            dwell_s=dwell_s,
        )


def instant(kind: EventKind, stream_id: str, obs: Observation, **fields: Any) -> Event:
    """A single-message event (``line_cross``, ``zone_enter``, ``zone_exit``) at ``obs``: begun and ended there."""
    return replace(OpenEvent(kind, stream_id, obs).event("new"), ended_at=obs.at, **fields)
