"""Streams added, removed and listed while the pipeline runs: a ZeroMQ REP socket answering JSON requests.

Requests: ``{"op": "list"}``, ``{"op": "add", "stream": {…a stream's config…}}``, ``{"op": "remove", "id": ID}``.
Replies: ``{"ok": true, …}`` or ``{"ok": false, "error": "one line"}``. With ``publish.curve`` the socket uses
the bus's keys, so only the bus's allowed clients can steer the pipeline. ``edgesight streams …`` is the client.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import zmq
from pydantic import ValidationError

from pipeline.config import StreamConfig, describe_validation_error
from pipeline.curve import CurveClient, CurveServer, ServerContext
from pipeline.errors import EdgesightError, PublishError
from pipeline.secrecy import redact_json

if TYPE_CHECKING:
    from pipeline.view import PipelineControl

log = logging.getLogger(__name__)

POLL_MS = 200


class ControlServer:
    """Answers control requests in a thread, one at a time (adding a stream opens its source first)."""

    def __init__(self, pipeline: PipelineControl, endpoint: str, curve: CurveServer | None = None) -> None:
        self._pipeline = pipeline
        self._ctx = ServerContext(curve)
        self._sock = self._ctx.socket(zmq.REP)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise PublishError(f"cannot bind the control endpoint '{endpoint}': {exc}") from exc
        self.endpoint = endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(POLL_MS, zmq.POLLIN):
                continue
            raw = self._sock.recv()
            reply = self.handle(raw)
            self._sock.send(json.dumps(redact_json(reply)).encode())

    def handle(self, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        op = request.get("op")
        try:
            if op == "list":
                return {"ok": True, "streams": [_stream_json(s) for s in self._pipeline.stream_states()]}
            if op == "add":
                try:
                    stream = StreamConfig.model_validate(request.get("stream"))
                except ValidationError as exc:
                    return {"ok": False, "error": describe_validation_error(exc, "stream")}
                self._pipeline.add_stream(stream)
                return {"ok": True, "added": stream.id}
            if op == "remove":
                self._pipeline.remove_stream(str(request.get("id")))
                return {"ok": True, "removed": request.get("id")}
        except EdgesightError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown op {op!r} (list, add, remove)"}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()


def _stream_json(state: Any) -> dict[str, Any]:
    return {"id": state.stream_id, "state": state.state, "captured": state.captured, "published": state.published}


def request(endpoint: str, body: dict[str, Any], timeout_s: float = 15.0, curve: CurveClient | None = None) -> Any:
    """Send one control request and return the reply; a pipeline that does not answer is a one-line error."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(body).encode())
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise PublishError(f"no pipeline answered on {endpoint} within {timeout_s:g} s (control.endpoint?)")
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)
        ctx.term()
