"""A browser preview: each stream's annotated frames as MJPEG on a small web page, with the streams' states and
the last events (snapshots, and clips played in the page).

The publish stage only hands over a reference to each published (already
redacted) frame; drawing the overlays and JPEG encoding happen in the HTTP
threads, at most ``max_fps`` per watcher, and only while someone watches.
``/`` is the page, ``/stream/ID.mjpg`` the live picture and ``/snapshot/ID.jpg``
the latest frame. With ``views`` (``preview.processed``), a stream is shown after
its image operations, as the model saw it. Once given the pipeline's view
(:meth:`PreviewServer.attach`), it also answers ``/streams.json``,
``/events.json`` and ``/events/ID/{snapshot.jpg,crop.jpg,clip.mp4}`` (clips with
``Range``), from the same queries as the HTTP API but without its token: the
preview is a page for a trusted network, as its live pictures are.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
import numpy as np

from pipeline.api import queries
from pipeline.config import StreamConfig
from pipeline.httpserver import HttpServer, reply, send_file
from pipeline.imageops import ImageOps, build_ops
from pipeline.messages import FrameResult
from pipeline.preview_page import page
from pipeline.recorder import Overlays, annotate
from pipeline.secrecy import redact_json

if TYPE_CHECKING:
    from pipeline.view import PipelineView

log = logging.getLogger(__name__)

BOUNDARY = "edgesightframe"
JPEG_QUALITY = 80
NO_VIEW = "the preview was given no pipeline to show"


class PreviewServer:
    """A :class:`~pipeline.recorder.FrameSink` that serves what it is given as MJPEG over HTTP."""

    def __init__(
        self,
        host: str,
        port: int,
        stream_ids: list[str],
        overlays: Overlays | None = None,
        max_fps: float = 10.0,
        views: dict[str, ImageOps] | None = None,
        pipeline: PipelineView | None = None,
    ) -> None:
        """``pipeline``: whose stream states and events (with ``events.store``) the page lists."""
        self.stream_ids = list(stream_ids)
        self.overlays = overlays or Overlays()
        self.max_fps = max_fps
        self.views = dict(views or {})
        """Per stream: image operations the picture goes through before it is drawn on."""
        self._view_locks: dict[str, threading.Lock] = {sid: threading.Lock() for sid in self.views}
        """An ImageOps keeps per-call state and viewers draw in their own threads: one at a time per stream."""
        self._latest: dict[str, tuple[int, FrameResult, np.ndarray | None]] = {}
        self._changed = threading.Condition()
        self._closed = False
        self._view = pipeline
        self._http = HttpServer(host, port, self._answer, "preview")
        self.port = self._http.port
        self._http.start()

    # -- FrameSink -------------------------------------------------------------------------------------------
    def write(self, result: FrameResult, track_ids: np.ndarray | None = None) -> None:
        with self._changed:
            count = self._latest.get(result.stream_id, (0, result, None))[0] + 1
            self._latest[result.stream_id] = (count, result, track_ids)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._http.close()

    def add_stream(self, stream: StreamConfig, processed: bool) -> None:
        """A stream added at run time: its lines and zones, and its operations when the preview shows them."""
        self.overlays.regions[stream.id] = (list(stream.lines), list(stream.zones))
        if processed and stream.preprocess:
            self._view_locks.setdefault(stream.id, threading.Lock())
            self.views[stream.id] = build_ops(stream.preprocess)
        else:
            self.views.pop(stream.id, None)  # a stream added again without operations shows its frame

    def _count(self, sid: str) -> int:
        latest = self._latest.get(sid)
        return latest[0] if latest is not None else 0

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _jpeg(self, result: FrameResult, track_ids: np.ndarray | None) -> bytes:
        view = self.views.get(result.stream_id)
        if view is None:
            image = annotate(result, track_ids, self.overlays)
        else:
            with self._view_locks[result.stream_id]:
                image = annotate(result, track_ids, self.overlays, view)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return data.tobytes() if ok else b""

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            reply(request, 200, "text/html; charset=utf-8", self._page().encode())
        elif path in ("/streams.json", "/events.json") or path.startswith("/events/"):
            try:
                self._state(request, path)
            except queries.ApiError as exc:
                _json(request, exc.status, {"error": exc.message})
        elif path.startswith("/snapshot/") and path.endswith(".jpg"):
            sid = path[len("/snapshot/") : -len(".jpg")]
            latest = self._latest.get(sid)
            if latest is None:
                reply(request, 404, "text/plain", f"no frame from '{sid}' yet\n".encode())
            else:
                reply(request, 200, "image/jpeg", self._jpeg(latest[1], latest[2]))
        elif path.startswith("/stream/") and path.endswith(".mjpg") and path[8:-5] in self._streams():
            self._mjpeg(request, path[8:-5])
        else:
            reply(request, 404, "text/plain", b"not found\n")

    def _state(self, request: BaseHTTPRequestHandler, path: str) -> None:
        """The streams, the events and their files, as the API answers them."""
        view = self._view
        if view is None:
            raise queries.ApiError(404, NO_VIEW)
        if path == "/streams.json":
            _json(request, 200, {"streams": queries.streams(view)})
            return
        store = queries.store_of(view)
        if path == "/events.json":
            query = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
            try:
                limit = int(query.get("limit", "20"))
            except ValueError:
                raise queries.ApiError(422, f"limit: expected a whole number, got {query['limit']!r}") from None
            q = query.get
            found = queries.find_events(store, q("stream"), q("label"), q("kind"), q("since"), q("until"), limit)
            _json(request, 200, {"events": found})
            return
        parts = path.split("/")  # "", "events", ID, FILE
        if len(parts) != 4:
            raise queries.ApiError(404, "not found")
        file, kind = queries.event_file(store, unquote(parts[2]), parts[3])
        send_file(request, file, kind)

    def _mjpeg(self, request: BaseHTTPRequestHandler, sid: str) -> None:
        request.send_response(200)
        request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        seen = 0
        interval = 1.0 / self.max_fps
        try:
            while True:
                last = seen
                with self._changed:
                    self._changed.wait_for(lambda: self._closed or self._count(sid) > last, 1.0)  # noqa: B023
                    if self._closed:
                        return
                    latest = self._latest.get(sid)
                if latest is None or latest[0] == seen:
                    continue
                seen = latest[0]
                started = time.monotonic()
                data = self._jpeg(latest[1], latest[2])
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                request.wfile.write(head.encode() + data + b"\r\n")
                request.wfile.flush()
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except (BrokenPipeError, ConnectionResetError):
            return  # the viewer left

    def _streams(self) -> list[str]:
        """The configured streams, then any added at run time (they appear once they publish)."""
        return self.stream_ids + sorted(set(self._latest) - set(self.stream_ids))

    def _page(self) -> str:
        tiles = "\n".join(
            f'<figure><img id="{html.escape(s)}" src="/stream/{html.escape(s)}.mjpg" alt="{html.escape(s)}">'
            f"<figcaption>{html.escape(s)}</figcaption></figure>"
            for s in self._streams()
        )
        return page(tiles)


def _json(request: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
    reply(request, code, "application/json", json.dumps(redact_json(body)).encode())
