"""The published message schema (version 1), as subscribers read it.

Every message is multipart ``[topic, JSON body]``, plus a third binary part on
events that carry a thumbnail (JPEG). Topics are ``detections.<stream_id>``,
``status.<stream_id>``, ``events.<stream_id>`` and ``counts.<stream_id>``
(``faces.<stream_id>`` bodies are detections). JSON Schema files for each body
ship in ``edgesight_client/schemas/`` (see :mod:`edgesight_client.validation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

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


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object; ``box`` is ``(x1, y1, x2, y2)`` in source-frame pixels."""

    class_id: int
    label: str
    confidence: float
    box: tuple[float, float, float, float]
    track_id: int | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    """Segmentation models: the mask's outline in source-frame pixels."""
    rle: Mapping[str, Any] | None = field(default=None, repr=False)
    """Segmentation models, when enabled: the mask as COCO RLE (``size``, ``counts``)."""
    identity: str | None = None
    """Faces, with recognition on: the enrolled person matched."""
    distance: float | None = None
    anon_id: str | None = None
    """Faces, with recognition on, not recognized: an anonymous id stable for the track."""
    keypoints: tuple[tuple[float, float, float], ...] | None = None
    """Pose models: ``(x, y, confidence)`` per keypoint, in source-frame pixels."""

    def __post_init__(self) -> None:
        if len(self.box) != 4:
            raise ValueError(f"box must have 4 numbers, got {self.box!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    def to_json(self) -> dict[str, Any]:
        body = {
            "class_id": self.class_id,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "box": [round(v, 2) for v in self.box],
        }
        if self.track_id is not None:
            body["track_id"] = self.track_id
        if self.landmarks is not None:
            body["landmarks"] = [[round(x, 2), round(y, 2)] for x, y in self.landmarks]
        if self.polygon is not None:
            body["polygon"] = [[round(x, 1), round(y, 1)] for x, y in self.polygon]
        if self.rle is not None:
            body["rle"] = dict(self.rle)
        if self.keypoints is not None:
            body["keypoints"] = [[round(x, 2), round(y, 2), round(c, 2)] for x, y, c in self.keypoints]
        for key in ("identity", "distance", "anon_id"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        return body


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
