"""The published message schema (versioned), for the publisher and for subscribers.

Every message is multipart ``[topic, JSON body]``, plus a third binary part on
events that carry a thumbnail (JPEG). Topics are ``detections.<stream_id>``,
``status.<stream_id>``, ``events.<stream_id>`` and ``counts.<stream_id>``.
JSON Schema files for each body live in ``pipeline/schemas/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.messages import Detection, FrameResult, MaskFormat

DETECTIONS_SCHEMA = "edgesight.detections/1"
STATUS_SCHEMA = "edgesight.status/1"
EVENT_SCHEMA = "edgesight.event/1"
COUNTS_SCHEMA = "edgesight.counts/1"
DETECTIONS_TOPIC = "detections"
STATUS_TOPIC = "status"
EVENTS_TOPIC = "events"
COUNTS_TOPIC = "counts"
FACES_TOPIC = "faces"
STATUS_EVENTS = ("start", "eos", "stopped", "error", "connecting", "online", "reconnecting", "offline")


def topic_for(kind: str, stream_id: str) -> str:
    return f"{kind}.{stream_id}"


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


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One ``events.<stream_id>`` message (see :mod:`pipeline.analytics.events`)."""

    topic: str
    stream_id: str
    type: str
    event_id: str
    kind: str
    track_id: int
    label: str
    started_at: float
    ended_at: float | None
    frame_index: int
    box: tuple[float, float, float, float]
    score: float
    line: str | None
    zone: str | None
    direction: str | None
    raw: dict[str, Any]
    thumbnail: bytes | None = None
    """JPEG bytes of the object, when the pipeline sends thumbnails."""


@dataclass(frozen=True, slots=True)
class CountsMessage:
    """One ``counts.<stream_id>`` message: running line counts and zone occupancy."""

    topic: str
    stream_id: str
    frame_index: int
    lines: dict[str, dict[str, dict[str, int]]]
    """``{line: {"in": {label: n}, "out": {label: n}}}``"""
    zones: dict[str, dict[str, dict[str, int]]]
    """``{zone: {"occupancy": {label: n}, "entered": {…}, "exited": {…}}}``"""
    raw: dict[str, Any]


Message = DetectionsMessage | StatusMessage | EventMessage | CountsMessage


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
        track = item.get("track_id")
        points = item.get("landmarks")
        outline = item.get("polygon")
        return Detection(
            int(item["class_id"]),
            str(item["label"]),
            float(item["confidence"]),
            (x1, y1, x2, y2),
            None if track is None else int(track),
            None if points is None else tuple((float(x), float(y)) for x, y in points),
            None if outline is None else tuple((float(x), float(y)) for x, y in outline),
            item.get("rle"),
            item.get("identity"),
            None if item.get("distance") is None else float(item["distance"]),
            item.get("anon_id"),
            None
            if item.get("keypoints") is None
            else tuple((float(x), float(y), float(c)) for x, y, c in item["keypoints"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"bad detection {item!r}: {exc}") from exc


def _box(value: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in value)
    return x1, y1, x2, y2


def _event(topic: str, data: dict[str, Any], thumbnail: bytes | None) -> EventMessage:
    ended = data.get("ended_at")
    return EventMessage(
        topic=topic,
        stream_id=str(data["stream_id"]),
        type=str(data["type"]),
        event_id=str(data["event_id"]),
        kind=str(data["kind"]),
        track_id=int(data["track_id"]),
        label=str(data["label"]),
        started_at=float(data["started_at"]),
        ended_at=None if ended is None else float(ended),
        frame_index=int(data["frame_index"]),
        box=_box(data["box"]),
        score=float(data["score"]),
        line=data.get("line"),
        zone=data.get("zone"),
        direction=data.get("direction"),
        raw=data,
        thumbnail=thumbnail,
    )


def decode(topic: bytes, body: bytes, extra: bytes | None = None) -> Message:
    """Parse one received message (``extra``: its third part, if any); raises :class:`MessageError` if not ours."""
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
        if name == "edgesight.event" and major == 1:
            return _event(topic_text, data, extra)
        if name == "edgesight.counts" and major == 1:
            if not isinstance(data["lines"], dict) or not isinstance(data["zones"], dict):
                raise TypeError("'lines' and 'zones' must be objects")
            return CountsMessage(
                topic=topic_text,
                stream_id=str(data["stream_id"]),
                frame_index=int(data["frame_index"]),
                lines=data["lines"],
                zones=data["zones"],
                raw=data,
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"{name}/{major}: missing or bad field {exc}") from exc
    raise MessageError(f"unsupported schema '{data.get('schema')}'")
