"""The published message schema (versioned), the publisher's side: building and encoding bodies.

The subscriber's side (the message types, :func:`decode`, the constants) lives in the light bus client,
:mod:`edgesight_client.schema`, and is re-exported here.
"""

from __future__ import annotations

from typing import Any

import orjson

from edgesight_client.schema import (
    COUNTS_SCHEMA,
    COUNTS_TOPIC,
    DETECTIONS_SCHEMA,
    DETECTIONS_TOPIC,
    EVENT_SCHEMA,
    EVENTS_TOPIC,
    FACES_TOPIC,
    STATUS_EVENTS,
    STATUS_SCHEMA,
    STATUS_TOPIC,
    CountsMessage,
    DetectionsMessage,
    EventMessage,
    Message,
    MessageError,
    StatusMessage,
    decode,
    topic_for,
)
from pipeline.messages import FrameResult, MaskFormat

__all__ = [
    "COUNTS_SCHEMA",
    "COUNTS_TOPIC",
    "DETECTIONS_SCHEMA",
    "DETECTIONS_TOPIC",
    "EVENTS_TOPIC",
    "EVENT_SCHEMA",
    "FACES_TOPIC",
    "STATUS_EVENTS",
    "STATUS_SCHEMA",
    "STATUS_TOPIC",
    "CountsMessage",
    "DetectionsMessage",
    "EventMessage",
    "Message",
    "MessageError",
    "StatusMessage",
    "decode",
    "detections_body",
    "encode",
    "status_body",
    "topic_for",
]


def detections_body(
    result: FrameResult,
    seq: int,
    model: str,
    published_at: float,
    track_ids: Any = None,
    masks: MaskFormat | None = None,
    annotations: Any = None,
) -> dict[str, Any]:
    frame = result.frame
    return (
        {
            "schema": DETECTIONS_SCHEMA,
            "stream_id": frame.stream_id,
            "seq": seq,
            "frame_index": frame.frame_index,
            "pts_ms": round(frame.pts_ms, 3),
            "captured_at": frame.captured_at,
            "published_at": published_at,
            "width": frame.width,
            "height": frame.height,
            "model": model,
            "detections": result.detections_json(track_ids, masks, annotations),
        }
        | ({"reused": True} if result.reused else {})
        | dict(result.frame_attributes or {})
    )


def status_body(stream_id: str, event: str, at: float, **extra: Any) -> dict[str, Any]:
    if event not in STATUS_EVENTS:
        raise ValueError(f"unknown status event '{event}'")
    return {"schema": STATUS_SCHEMA, "stream_id": stream_id, "event": event, "at": at, **extra}


def encode(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (orjson: several times faster than ``json`` at hundreds of messages a second)."""
    return orjson.dumps(body)
