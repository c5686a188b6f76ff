"""What the API and the preview page answer, without a web framework: streams, events and their files. A request
that cannot be answered raises :class:`ApiError` with the HTTP status and one line."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pipeline.secrecy import redact

if TYPE_CHECKING:
    from pipeline.media.store import EventStore, StoredEvent
    from pipeline.view import PipelineView, StreamState

NOT_KEPT = "events are not kept: set events.store"
EVENT_FILES = {
    "snapshot.jpg": ("snapshot", "image/jpeg"),
    "crop.jpg": ("crop", "image/jpeg"),
    "clip.mp4": ("clip", "video/mp4"),
}
"""The files of an event by their name in URLs: the stored field that names each, and its content type."""
MAX_LIMIT = 1000


class ApiError(Exception):
    """A request that cannot be answered: its HTTP status and one line (passed through :func:`redact`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(redact(message))
        self.status = status
        self.message = redact(message)


def stream_json(state: StreamState) -> dict[str, Any]:
    return {
        "id": state.stream_id,
        "state": str(state.state),
        "captured": state.captured,
        "published": state.published,
        "reconnects": state.reconnects,
        "drops": dict(state.drops),
        "total": state.total,
        "latency_ms": round(state.latency_ms, 3),
    }


def streams(pipeline: PipelineView) -> list[dict[str, Any]]:
    return [stream_json(s) for s in pipeline.stream_states()]


def store_of(pipeline: PipelineView) -> EventStore:
    store = pipeline.event_store
    if store is None:
        raise ApiError(404, NOT_KEPT)
    return store


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO 8601 time (UTC unless it names its offset)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(422, f"{name}: expected Unix seconds or an ISO 8601 time, got {value!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def find_events(
    store: EventStore,
    stream: str | None = None,
    label: str | None = None,
    kind: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 100,
    base: str = "",
) -> list[dict[str, Any]]:
    """Events started within [``since``, ``until``], newest first, matching every filter given."""
    start, end = parse_time(since, "since"), parse_time(until, "until")
    if start is not None and end is not None and start > end:
        raise ApiError(422, "since: after until")
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, f"limit: between 1 and {MAX_LIMIT}, got {limit}")
    found = store.events(stream_id=stream, label=label, kind=kind, since=start, until=end, limit=limit)
    return [event_json(e, base) for e in found]


def get_event(store: EventStore, event_id: str) -> StoredEvent:
    event = store.get(event_id)
    if event is None:
        raise ApiError(404, f"no event '{event_id}'")
    return event


def event_json(event: StoredEvent, base: str = "") -> dict[str, Any]:
    """The stored event with the URLs of its files under ``base`` (``None`` for a file not made yet)."""
    url = f"{base}/events/{quote(event.event_id, safe='')}/"
    links = {f"{field}_url": url + name if getattr(event, field) else None for name, (field, _) in EVENT_FILES.items()}
    return {**event.to_json(), **links}


def event_file(store: EventStore, event_id: str, name: str) -> tuple[Path, str]:
    """The path and content type of an event's ``snapshot.jpg``, ``crop.jpg`` or ``clip.mp4``."""
    if name not in EVENT_FILES:
        raise ApiError(404, f"no such file '{name}' (snapshot.jpg, crop.jpg, clip.mp4)")
    field, kind = EVENT_FILES[name]
    stored = getattr(get_event(store, event_id), field)
    if stored is None:
        raise ApiError(404, f"event '{event_id}' has no {field} (yet)")
    try:
        path = store.path(stored)
    except ValueError:
        raise ApiError(404, f"event '{event_id}': its {field} is not in the event store") from None
    if not path.is_file():
        raise ApiError(404, f"event '{event_id}': its {field} is gone (removed by retention?)")
    return path, kind
