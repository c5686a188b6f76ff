"""The published message schema (versioned), for the publisher and for subscribers.

Every message is multipart ``[topic, JSON body]``; a third binary part may be
added by later schema versions (images). Topics are ``detections.<stream_id>``
and ``status.<stream_id>``. JSON Schema files for each body live in
``pipeline/schemas/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.messages import Detection, FrameResult

DETECTIONS_SCHEMA = "edgesight.detections/1"
STATUS_SCHEMA = "edgesight.status/1"
DETECTIONS_TOPIC = "detections"
STATUS_TOPIC = "status"
STATUS_EVENTS = ("start", "eos", "stopped", "error")


def topic_for(kind: str, stream_id: str) -> str:
    return f"{kind}.{stream_id}"


def detections_body(result: FrameResult, seq: int, model: str, published_at: float) -> dict[str, Any]:
    frame = result.frame
    return {
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
        "detections": result.detections_json(),
    }


def status_body(stream_id: str, event: str, at: float, **extra: Any) -> dict[str, Any]:
    if event not in STATUS_EVENTS:
        raise ValueError(f"unknown status event '{event}'")
    return {"schema": STATUS_SCHEMA, "stream_id": stream_id, "event": event, "at": at, **extra}


def encode(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (orjson: several times faster than ``json`` at hundreds of messages a second)."""
    return orjson.dumps(body)


# -- the subscriber's side ------------------------------------------------------------------


class MessageError(ValueError):
    """A received message does not follow the schema."""


@dataclass(frozen=True, slots=True)
class DetectionsMessage:
    """One ``detections.<stream_id>`` message."""

    topic: str
    stream_id: str
    seq: int
    frame_index: int
    pts_ms: float
    captured_at: float
    published_at: float
    width: int
    height: int
    model: str
    detections: tuple[Detection, ...]
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """One ``status.<stream_id>`` message (``start``, ``eos``, ``stopped`` or ``error``)."""

    topic: str
    stream_id: str
    event: str
    at: float
    message: str | None
    raw: dict[str, Any]


Message = DetectionsMessage | StatusMessage


def _major(schema: Any) -> tuple[str, int]:
    if not isinstance(schema, str) or "/" not in schema:
        raise MessageError(f"missing or malformed 'schema': {schema!r}")
    name, _, version = schema.partition("/")
    try:
        return name, int(version.split(".")[0])
    except ValueError as exc:
        raise MessageError(f"malformed schema version in {schema!r}") from exc


def _detection(item: Any) -> Detection:
    try:
        x1, y1, x2, y2 = (float(v) for v in item["box"])
        return Detection(int(item["class_id"]), str(item["label"]), float(item["confidence"]), (x1, y1, x2, y2))
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"bad detection {item!r}: {exc}") from exc


def decode(topic: bytes, body: bytes) -> Message:
    """Parse one received message; raises :class:`MessageError` if it is not edgesight's."""
    try:
        topic_text = topic.decode("utf-8")
        data = orjson.loads(body)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise MessageError(f"not a JSON message: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageError("message body is not a JSON object")
    name, major = _major(data.get("schema"))
    try:
        if name == "edgesight.detections" and major == 1:
            return DetectionsMessage(
                topic=topic_text,
                stream_id=str(data["stream_id"]),
                seq=int(data["seq"]),
                frame_index=int(data["frame_index"]),
                pts_ms=float(data["pts_ms"]),
                captured_at=float(data["captured_at"]),
                published_at=float(data["published_at"]),
                width=int(data["width"]),
                height=int(data["height"]),
                model=str(data["model"]),
                detections=tuple(_detection(d) for d in data["detections"]),
                raw=data,
            )
        if name == "edgesight.status" and major == 1:
            return StatusMessage(
                topic=topic_text,
                stream_id=str(data["stream_id"]),
                event=str(data["event"]),
                at=float(data["at"]),
                message=data.get("message"),
                raw=data,
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"{name}/{major}: missing or bad field {exc}") from exc
    raise MessageError(f"unsupported schema '{data.get('schema')}'")
