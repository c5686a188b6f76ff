"""The HTTP API beside metrics and health: streams listed, added and removed, events with their snapshots and
clips (Range requests), counts, the token, and the config rules, over real HTTP to running pipelines."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import free_port
from test_sources import FakeEngine

from pipeline.config import build_config, load_config
from pipeline.errors import ConfigError
from pipeline.media.store import EventStore
from pipeline.runner import Pipeline

PASSWORD = "pw-Kq7vR2"
TOKEN = "tok-3f9a1c7e5b2d4a60"


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request: status, headers, body (errors included)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def write_clip(path: Path, frames: int = 30, fps: int = 10) -> None:
    """A playable H.264 MP4 (yuv420p, moov atom first): a square moving over a gradient."""
    import av

    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(frames):
            image = np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (96, 1, 3))
            image[30:60, i * 4 : i * 4 + 30] = (0, 0, 255)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())


def keep_event(
    store: EventStore, event_id: str, stream_id: str, kind: str, label: str, at: float, files: bool = False
) -> None:
    """An event in ``store`` as the pipeline keeps one; ``files``: with a snapshot, a crop and a clip."""
    import cv2

    body: dict[str, Any] = {"schema": "edgesight.event/1", "type": "end", "event_id": event_id, "kind": kind}
    body |= {"stream_id": stream_id, "track_id": 1, "label": label, "class_id": 0, "started_at": at}
    body |= {"ended_at": at + 2.0, "frame_index": 10, "pts_ms": 1000.0, "box": [10.0, 20.0, 50.0, 80.0], "score": 0.9}
    body |= {"line": "gate", "direction": "in"} if kind == "line_cross" else {"zone": "kerb"}
    store.record(body)
    if not files:
        return
    snapshot, snapshot_path = store.file(stream_id, event_id, ".jpg")
    crop, crop_path = store.file(stream_id, event_id, "-crop.jpg")
    cv2.imwrite(str(snapshot_path), np.full((96, 160, 3), 128, np.uint8))
    cv2.imwrite(str(crop_path), np.full((40, 30, 3), 200, np.uint8))
    store.attach_snapshot(event_id, snapshot, crop)
    clip, clip_path = store.file(stream_id, event_id, ".mp4")
    write_clip(clip_path)
    store.attach_clip(event_id, clip, at - 1.0, at + 2.0)


def test_streams_events_and_counts_over_the_api(tmp_path: Path) -> None:
    config = {
        "streams": [
            {
                "id": "street",
                "source": {"type": "synthetic", "seed": 5, "frames": 3000},
                "lines": [{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}],
                "zones": [{"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1.0], [0.1, 1.0]]}],
            }
        ],
        "model": {"path": "edgesight-det", "device": "cpu"},
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "metrics": {"port": 0, "api": {}},
        "events": {"store": {"dir": str(tmp_path / "events")}},
    }
    pipeline = Pipeline(build_config(config, "t"))
    pipeline.start()
    bodies: list[bytes] = []

    def api(method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        code, headers, raw = call(port, method, "/api/v1" + path, data, {"Content-Type": "application/json"})
        bodies.append(raw)
        return code, headers, json.loads(raw) if headers["content-type"] == "application/json" else raw

    try:
        port = pipeline.metrics_port
        assert port
        deadline = time.monotonic() + 60
        while call(port, "GET", "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "the pipeline never got ready"
            time.sleep(0.1)
        code, _, got = api("GET", "/streams")
        assert code == 200 and [(s["id"], s["state"]) for s in got["streams"]] == [("street", "running")]
        assert api("GET", "/streams/street")[2]["total"] == 3000
        assert api("GET", "/streams/nope")[:3:2] == (404, {"error": "no stream 'nope'"})

        late = {"id": "late", "source": "synthetic://?frames=100000&width=96&height=64"}
        assert api("POST", "/streams", late)[:3:2] == (201, {"added": "late"})
        assert "late" in {s["id"] for s in api("GET", "/streams")[2]["streams"]}
        assert api("POST", "/streams", late)[:3:2] == (409, {"error": "stream 'late' is already running"})
        missing = {"id": "c", "source": "/nowhere/missing.mp4"}
        code, _, got = api("POST", "/streams", missing)
        assert code == 422 and "video file not found" in got["error"]
        assert api("POST", "/streams", {"id": "x"})[:3:2] == (422, {"error": "stream: source: Field required"})
        assert api("POST", "/streams", {**late, "id": "y", "colour": 1})[2] == {"error": "stream: colour: unknown key"}
        code, _, got = api("POST", "/streams", b"{not json")
        assert code == 400 and got["error"].startswith("bad request: not JSON")
        assert api("POST", "/streams", [1])[0] == 400
        camera = {"id": "cam", "source": f"rtsp://viewer:{PASSWORD}@127.0.0.1:1/live", "reconnect": {"base_s": 5}}
        assert api("POST", "/streams", camera)[0] == 201
        assert api("DELETE", "/streams/cam")[:3:2] == (200, {"removed": "cam"})
        assert api("DELETE", "/streams/late")[:3:2] == (200, {"removed": "late"})
        assert api("DELETE", "/streams/nope")[:3:2] == (404, {"error": "no running stream 'nope'"})

        code, _, got = api("GET", "/counts")
        assert code == 200 and set(got["counts"]) == {"street"}
        assert set(got["counts"]["street"]["lines"]["gate"]) == {"in", "out"}
        assert set(got["counts"]["street"]["zones"]["kerb"]) == {"occupancy", "entered", "exited"}

        store = pipeline.event_store
        assert store is not None
        t0 = 1_700_000_000.0
        keep_event(store, "ev-a", "yard", "line_cross", "person", t0, files=True)
        keep_event(store, "ev-b", "yard", "zone_enter", "car", t0 + 10)
        keep_event(store, "ev-c", "porch", "loiter", "person", t0 + 20)

        def ids(query: str) -> list[str]:
            code, _, got = api("GET", "/events?" + query)
            assert code == 200, got
            return [e["event_id"] for e in got["events"]]

        assert ids("stream=yard") == ["ev-b", "ev-a"], "newest first"
        assert ids("stream=yard&label=person") == ["ev-a"]
        assert ids("kind=loiter") == ["ev-c"]
        assert ids(f"since={t0 + 5}&until={t0 + 25}&label=person") == ["ev-c"]
        iso = datetime.fromtimestamp(t0 + 5, timezone.utc).isoformat().replace("+00:00", "Z")
        assert ids(f"stream=yard&until={iso}") == ["ev-a"]
        assert len(ids("limit=1")) == 1
        assert api("GET", "/events?since=yesterday")[:3:2] == (
            422,
            {"error": "since: expected Unix seconds or an ISO 8601 time, got 'yesterday'"},
        )
        for bad in ("kind=bogus", "limit=0", "limit=5000", "limit=many", f"since={t0 + 9}&until={t0}"):
            code, _, got = api("GET", "/events?" + bad)
            assert code == 422 and list(got) == ["error"] and "\n" not in got["error"], (bad, got)

        code, _, event = api("GET", "/events/ev-a")
        assert code == 200 and event["kind"] == "line_cross" and event["event"]["line"] == "gate"
        assert event["clip_url"] == "/api/v1/events/ev-a/clip.mp4" and event["snapshot_url"].endswith("snapshot.jpg")
        assert api("GET", "/events/ev-b")[2]["clip_url"] is None
        assert api("GET", "/events/nope")[:3:2] == (404, {"error": "no event 'nope'"})
        code, headers, jpeg = api("GET", "/events/ev-a/snapshot.jpg")
        assert code == 200 and headers["content-type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        assert api("GET", "/events/ev-a/crop.jpg")[0] == 200
        code, headers, mp4 = api("GET", "/events/ev-a/clip.mp4")
        clip = store.path(store.get("ev-a").clip or "").read_bytes()  # type: ignore[union-attr]
        assert code == 200 and headers["content-type"] == "video/mp4" and mp4 == clip
        assert headers["accept-ranges"] == "bytes"
        code, headers, part = call(port, "GET", "/api/v1/events/ev-a/clip.mp4", None, {"Range": "bytes=100-199"})
        assert code == 206 and part == clip[100:200] and headers["content-range"] == f"bytes 100-199/{len(clip)}"
        code, _, part = call(port, "GET", "/api/v1/events/ev-a/clip.mp4", None, {"Range": "bytes=-50"})
        assert code == 206 and part == clip[-50:]
        assert call(port, "GET", "/api/v1/events/ev-a/clip.mp4", None, {"Range": f"bytes={len(clip)}-"})[0] == 416
        assert api("GET", "/events/ev-b/clip.mp4")[:3:2] == (404, {"error": "event 'ev-b' has no clip (yet)"})

        assert call(port, "GET", "/metrics")[2].count(b"edgesight_frames_published_total{") >= 1
        assert call(port, "GET", "/healthz")[0] == 200
        code, headers, page = call(port, "GET", "/docs")
        assert code == 200 and b"swagger" in page.lower()
        paths = json.loads(call(port, "GET", "/openapi.json")[2])["paths"]
        assert {"/api/v1/streams", "/api/v1/events", "/api/v1/events/{event_id}/clip.mp4", "/api/v1/counts"} <= set(
            paths
        )
        assert call(port, "GET", "/nothing")[:3:2] == (404, b'{"error":"not found"}')
    finally:
        pipeline.stop()
        pipeline.close()
    assert not any(PASSWORD.encode() in body for body in bodies), "the camera's password never leaves"


def test_a_token_guards_the_api_and_events_need_a_store(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = {
        "streams": [{"id": "a", "source": "synthetic://?frames=100000&width=96&height=64"}],
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "metrics": {"port": 0, "api": {"token": TOKEN}},
        "tracking": {"enabled": False},
    }
    pipeline = Pipeline(build_config(config, "t"), engine_factory=lambda _s, _n: FakeEngine())
    pipeline.start()
    replies = []
    try:
        port = pipeline.metrics_port
        assert port
        replies.append(call(port, "GET", "/api/v1/streams"))
        code, headers, body = replies[-1]
        assert code == 401 and headers["www-authenticate"] == "Bearer"
        assert json.loads(body) == {"error": "a bearer token is required (Authorization: Bearer TOKEN)"}
        replies.append(call(port, "GET", "/api/v1/streams", None, {"Authorization": f"Bearer {TOKEN}x"}))
        assert replies[-1][0] == 401 and json.loads(replies[-1][2]) == {"error": "wrong token"}
        replies.append(call(port, "GET", "/api/v1/counts", None, {"Authorization": f"Basic {TOKEN}"}))
        assert replies[-1][0] == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        replies.append(call(port, "GET", "/api/v1/streams", None, good))
        assert replies[-1][0] == 200 and json.loads(replies[-1][2])["streams"][0]["id"] == "a"
        replies.append(call(port, "GET", "/api/v1/events?label=person", None, good))
        assert replies[-1][0] == 404 and json.loads(replies[-1][2]) == {
            "error": "events are not kept: set events.store"
        }
        replies.append(call(port, "GET", "/api/v1/events/x/clip.mp4", None, good))
        assert replies[-1][0] == 404
        assert call(port, "GET", "/metrics")[0] == 200 and call(port, "GET", "/healthz")[0] == 200, "probes need none"
        document = json.loads(call(port, "GET", "/openapi.json")[2])
        assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert "/api/v1/streams" in document["paths"]
    finally:
        pipeline.stop()
        started = time.monotonic()
        pipeline.close()
        closing_s = time.monotonic() - started
    assert closing_s < 2.0, "the API server stops within the pipeline's stop budget"
    assert not [t for t in threading.enumerate() if t.name == "metrics-http"]
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind (closed connections linger)
        s.bind(("127.0.0.1", port))  # nothing listens there any more
        s.listen()
    assert all(TOKEN.encode() not in body for _, _, body in replies)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "box.example"])
def test_off_loopback_the_api_needs_a_token(host: str) -> None:
    base: dict[str, Any] = {"streams": [{"id": "a", "source": "x.mp4"}]}
    with pytest.raises(ConfigError) as caught:
        build_config({**base, "metrics": {"port": 9108, "host": host, "api": {}}}, "cfg.yaml")
    assert str(caught.value) == (
        f"cfg.yaml: metrics: api.token is required when host '{host}' is not a loopback address "
        "(the API steers the pipeline; `${NAME}` takes the token from the environment)"
    )
    config = build_config({**base, "metrics": {"port": 9108, "host": host, "api": {"token": TOKEN}}}, "c")
    assert config.metrics.api is not None and TOKEN not in repr(config) + config.model_dump_json()
    assert build_config({**base, "metrics": {"port": 9108, "host": host}}, "c").metrics.api is None, "metrics alone"


def test_api_config_rules(tmp_path: Path) -> None:
    base: dict[str, Any] = {"streams": [{"id": "a", "source": "x.mp4"}]}
    for host in ("127.0.0.1", "127.0.1.1", "::1", "localhost"):
        assert build_config({**base, "metrics": {"port": 0, "host": host, "api": {}}}, "c").metrics.api is not None
    with pytest.raises(ConfigError, match=r"^c: metrics: api needs port"):
        build_config({**base, "metrics": {"api": {}}}, "c")
    with pytest.raises(ConfigError, match=r"^c: metrics\.api\.token: at least 16 characters"):
        build_config({**base, "metrics": {"port": 0, "api": {"token": "short"}}}, "c")
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "streams: [{id: a, source: x.mp4}]\nmetrics: {port: 0, host: 0.0.0.0, api: {token: '${API_TOKEN}'}}\n"
    )
    config = load_config(path, environ={"API_TOKEN": TOKEN})
    assert config.metrics.api is not None and config.metrics.api.token is not None
    assert config.metrics.api.token.get_secret_value() == TOKEN
    with pytest.raises(ConfigError, match="API_TOKEN is not set"):
        load_config(path, environ={})


def test_a_taken_port_is_one_line() -> None:
    from pipeline.api.server import ApiServer

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            ApiServer(object(), "127.0.0.1", port)
    assert str(caught.value).startswith(f"cannot serve metrics on 127.0.0.1:{port}: ")
    assert "\n" not in str(caught.value)
