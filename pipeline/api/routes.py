"""``/api/v1``: streams listed, added and removed (as the control endpoint does), events with their snapshots
and clips, and the line and zone counts now. (No ``from __future__ import annotations``: FastAPI reads the annotations
of the routes, which name local dependencies.)"""

import hmac
import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr, ValidationError

from pipeline.api import queries
from pipeline.api.models import (
    AddedOut,
    CountsOut,
    ErrorOut,
    EventKind,
    EventOut,
    EventsOut,
    RemovedOut,
    StreamOut,
    StreamsOut,
)
from pipeline.api.queries import ApiError
from pipeline.config import StreamConfig, describe_validation_error
from pipeline.errors import EdgesightError
from pipeline.status import StreamStatus

if TYPE_CHECKING:
    from pipeline.view import PipelineControl

PREFIX = "/api/v1"
ADD_BODY = {
    "required": True,
    "description": "A stream's config, as in a config file's `streams` (see configuration.md, StreamConfig); "
    "taken as sent (no `${NAME}` expansion).",
    "content": {
        "application/json": {
            "schema": {"type": "object"},
            "example": {"id": "dock", "source": "rtsp://viewer:secret@192.0.2.30:554/stream1"},
        }
    },
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut} for code in codes}


StreamId = Annotated[str, Path(description="The stream's id.")]
EventId = Annotated[str, Path(description="The event's id (`event_id`).")]


def _guard(token: SecretStr | None) -> list[Any]:
    """The dependency that checks the bearer token (none without a token)."""
    if token is None:
        return []
    expected = token.get_secret_value().encode()
    bearer = HTTPBearer(auto_error=False, description="`metrics.api.token`")

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if credentials is None:
            raise ApiError(401, "a bearer token is required (Authorization: Bearer TOKEN)")
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ApiError(401, "wrong token")

    return [Depends(authorized)]


def api_router(pipeline: "PipelineControl", token: SecretStr | None) -> APIRouter:
    """The ``/api/v1`` routes on ``pipeline``; with ``token``, each needs it as a bearer token."""
    router = APIRouter(prefix=PREFIX, dependencies=_guard(token), responses=_errors(401))

    @router.get("/streams", tags=["streams"], summary="List the streams and their states")
    def list_streams() -> StreamsOut:
        return StreamsOut.model_validate({"streams": queries.streams(pipeline)})

    @router.get("/streams/{stream_id}", tags=["streams"], summary="One stream's state", responses=_errors(404, 422))
    def get_stream(stream_id: StreamId) -> StreamOut:
        for stream in queries.streams(pipeline):
            if stream["id"] == stream_id:
                return StreamOut.model_validate(stream)
        raise ApiError(404, f"no stream '{stream_id}'")

    @router.post(
        "/streams",
        tags=["streams"],
        summary="Start a stream",
        description="Validated as a config file's stream; its source is opened before the answer (a bad one is "
        "refused in one line and nothing starts). An id still running is refused (409); an ended one may be added "
        "again.",
        status_code=201,
        responses=_errors(400, 409, 422),
        openapi_extra={"requestBody": ADD_BODY},
    )
    async def add_stream(request: Request) -> AddedOut:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise ApiError(400, f"bad request: not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad request: expected a JSON object (a stream's config)")
        try:
            stream = StreamConfig.model_validate(body)
        except ValidationError as exc:
            raise ApiError(422, describe_validation_error(exc, "stream")) from None
        try:
            await run_in_threadpool(pipeline.add_stream, stream)
        except EdgesightError as exc:
            running = any(s.stream_id == stream.id and s.state != StreamStatus.ENDED for s in pipeline.stream_states())
            raise ApiError(409 if running else 422, str(exc)) from None
        return AddedOut(added=stream.id)

    @router.delete("/streams/{stream_id}", tags=["streams"], summary="End a stream", responses=_errors(404, 422))
    def remove_stream(stream_id: StreamId) -> RemovedOut:
        try:
            pipeline.remove_stream(stream_id)
        except EdgesightError as exc:
            raise ApiError(404, str(exc)) from None
        return RemovedOut(removed=stream_id)

    @router.get(
        "/events",
        tags=["events"],
        summary="List events, newest first",
        description="Needs `events.store`. Times are Unix seconds or ISO 8601 (UTC unless an offset is given).",
        responses=_errors(404, 422),
    )
    def list_events(
        stream: Annotated[str | None, Query(description="Only this stream's.")] = None,
        label: Annotated[str | None, Query(description="Only objects of this label (`person`).")] = None,
        kind: Annotated[EventKind | None, Query(description="Only events of this kind.")] = None,
        since: Annotated[str | None, Query(description="Started at or after this time.")] = None,
        until: Annotated[str | None, Query(description="Started at or before this time.")] = None,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="At most this many.")] = 100,
    ) -> EventsOut:
        store = queries.store_of(pipeline)
        found = queries.find_events(store, stream, label, kind, since, until, limit, PREFIX)
        return EventsOut.model_validate({"events": found})

    @router.get("/events/{event_id}", tags=["events"], summary="One event", responses=_errors(404, 422))
    def get_event(event_id: EventId) -> EventOut:
        event = queries.get_event(queries.store_of(pipeline), event_id)
        return EventOut.model_validate(queries.event_json(event, PREFIX))

    def event_file(event_id: str, name: str) -> FileResponse:
        path, kind = queries.event_file(queries.store_of(pipeline), event_id, name)
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})

    image = {200: {"content": {"image/jpeg": {}}, "description": "The JPEG."}, **_errors(404, 422)}

    @router.get(
        "/events/{event_id}/snapshot.jpg",
        summary="An event's snapshot",
        responses=image,
        tags=["events"],
        response_class=FileResponse,
    )
    def snapshot(event_id: EventId) -> FileResponse:
        return event_file(event_id, "snapshot.jpg")

    @router.get(
        "/events/{event_id}/crop.jpg",
        summary="An event's object, cropped",
        responses=image,
        tags=["events"],
        response_class=FileResponse,
    )
    def crop(event_id: EventId) -> FileResponse:
        return event_file(event_id, "crop.jpg")

    @router.get(
        "/events/{event_id}/clip.mp4",
        summary="An event's clip",
        description="H.264 in MP4; `Range: bytes=…` answers 206 with that part, so browsers can seek.",
        responses={
            200: {"content": {"video/mp4": {}}, "description": "The MP4."},
            206: {"content": {"video/mp4": {}}, "description": "The part of the MP4 asked for."},
            416: {"description": "A range past the end of the clip."},
            **_errors(404, 422),
        },
        tags=["events"],
        response_class=FileResponse,
    )
    def clip(event_id: EventId) -> FileResponse:
        return event_file(event_id, "clip.mp4")

    @router.get("/counts", tags=["counts"], summary="Line and zone counts now, per stream")
    def counts() -> CountsOut:
        return CountsOut.model_validate({"counts": pipeline.counts()})

    return router
