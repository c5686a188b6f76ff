"""The API's answers as pydantic models: they make the OpenAPI document (``/openapi.json``, docs/api.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

EventKind = Literal["object", "line_cross", "zone_enter", "zone_exit", "loiter", "identity"]


class ErrorOut(BaseModel):
    error: str = Field(description="One line saying what was wrong.")


class StreamOut(BaseModel):
    id: str
    state: str = Field(description="connecting, online, reconnecting, offline (live sources); running, ended.")
    captured: int = Field(description="Frames captured so far.")
    published: int = Field(description="Frames published so far.")
    reconnects: int
    drops: dict[str, int] = Field(description="Frames dropped so far, per queue.")
    total: int | None = Field(description="Frames the stream will take; null for a live source.")
    latency_ms: float = Field(description="Capture→publish latency of its last published frame.")


class StreamsOut(BaseModel):
    streams: list[StreamOut]


class AddedOut(BaseModel):
    added: str = Field(description="The id of the stream started.")


class RemovedOut(BaseModel):
    removed: str = Field(description="The id of the stream ending (its `stopped` status follows its last results).")


class EventOut(BaseModel):
    event_id: str
    stream_id: str
    kind: str
    label: str
    started_at: float = Field(description="Unix time (s) of the frame where the event began.")
    ended_at: float | None = Field(description="Unix time (s) of its last frame; null while it lasts.")
    line: str | None
    zone: str | None
    score: float
    snapshot: bool = Field(description="A snapshot was kept.")
    clip: bool = Field(description="A clip was kept.")
    clip_start: float | None = Field(description="Unix time (s) the clip starts.")
    clip_end: float | None
    event: dict[str, Any] = Field(description="The event's last message (edgesight.event/1, see messages.md).")
    snapshot_url: str | None = Field(description="Where its snapshot is (JPEG), null without one.")
    crop_url: str | None = Field(description="Where the crop of the object is (JPEG), null without one.")
    clip_url: str | None = Field(description="Where its clip is (MP4, H.264; Range requests), null without one.")


class EventsOut(BaseModel):
    events: list[EventOut] = Field(description="Newest first.")


class StreamCounts(BaseModel):
    stream_id: str
    lines: dict[str, dict[str, dict[str, int]]] = Field(description="Per line: `in` and `out`, each per label.")
    zones: dict[str, dict[str, dict[str, int]]] = Field(
        description="Per zone: `occupancy`, `entered` and `exited`, each per label."
    )


class CountsOut(BaseModel):
    counts: dict[str, StreamCounts] = Field(description="Per stream with lines or zones: its counts now.")
