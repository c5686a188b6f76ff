"""The preview page lists the streams, their states and the last events with their snapshots, and plays an
event's clip: over HTTP, and in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from test_api import call, keep_event
from test_sources import FakeEngine

from pipeline.config import build_config
from pipeline.runner import Pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def previewing(tmp_path: Path) -> Iterator[Pipeline]:
    """A running pipeline with a preview and an event store holding two events, the newer with a clip."""
    config = {
        "streams": [{"id": "street", "source": "synthetic://?frames=100000&width=160&height=96"}],
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "preview": {"port": 0, "max_fps": 5},
        "tracking": {"enabled": False},
        "events": {"store": {"dir": str(tmp_path / "events")}},
    }
    pipeline = Pipeline(build_config(config, "t"), engine_factory=lambda _s, _n: FakeEngine())
    pipeline.start()
    store = pipeline.event_store
    assert store is not None
    now = time.time()
    keep_event(store, "ev-old", "street", "zone_enter", "car", now - 60)
    keep_event(store, "ev-new", "street", "line_cross", "person", now - 5, files=True)
    yield pipeline
    pipeline.stop()
    pipeline.close()


def test_the_preview_serves_streams_events_and_clips(previewing: Pipeline) -> None:
    assert previewing.preview is not None
    port = previewing.preview.port
    code, _, body = call(port, "GET", "/streams.json")
    assert code == 200 and json.loads(body)["streams"][0]["id"] == "street"
    code, _, body = call(port, "GET", "/events.json?limit=5")
    events = json.loads(body)["events"]
    assert code == 200 and [e["event_id"] for e in events] == ["ev-new", "ev-old"]
    assert events[0]["clip_url"] == "/events/ev-new/clip.mp4" and events[1]["clip_url"] is None
    assert [e["event_id"] for e in json.loads(call(port, "GET", "/events.json?kind=zone_enter")[2])["events"]] == [
        "ev-old"
    ]
    assert call(port, "GET", "/events.json?since=soon")[0] == 422
    code, headers, clip = call(port, "GET", "/events/ev-new/clip.mp4")
    assert code == 200 and headers["Content-Type"] == "video/mp4" and headers["Accept-Ranges"] == "bytes"
    assert clip[4:8] == b"ftyp"
    code, headers, part = call(port, "GET", "/events/ev-new/clip.mp4", None, {"Range": "bytes=10-"})
    assert code == 206 and part == clip[10:] and headers["Content-Range"] == f"bytes 10-{len(clip) - 1}/{len(clip)}"
    assert call(port, "GET", "/events/ev-new/clip.mp4", None, {"Range": f"bytes={len(clip)}-"})[0] == 416
    code, headers, jpeg = call(port, "GET", "/events/ev-new/snapshot.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    assert json.loads(call(port, "GET", "/events/ev-old/clip.mp4")[2]) == {"error": "event 'ev-old' has no clip (yet)"}
    assert call(port, "GET", "/events/../../etc/passwd")[0] == 404


def test_a_preview_without_a_pipeline_says_so() -> None:
    from pipeline.preview import PreviewServer

    server = PreviewServer("127.0.0.1", 0, ["s"])
    try:
        code, _, body = call(server.port, "GET", "/events.json")
    finally:
        server.close()
    assert code == 404 and json.loads(body) == {"error": "the preview was given no pipeline to show"}


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt: chromium)")
def test_headless_chromium_lists_streams_and_events_and_plays_the_clip(previewing: Pipeline, tmp_path: Path) -> None:
    assert previewing.preview is not None
    port = previewing.preview.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot/street.jpg", timeout=30):
        pass  # a frame is there before the browser comes
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = done.stdout
    assert '<tr data-stream="street" data-state="running">' in dom, dom[-3000:]
    assert re.search(r'<li data-event="ev-new" class="clip"><img src="/events/ev-new/snapshot.jpg"', dom), dom
    assert '<li data-event="ev-old">' in dom
    assert '<video id="player" controls="" preload="metadata" playsinline="" src="/events/ev-new/clip.mp4">' in dom
    played = re.search(r'<p id="clip" data-duration="([0-9.]+)">', dom)
    assert played, "the clip's metadata loaded: " + (re.search(r'<p id="clip".*?</p>', dom) or [dom])[0]
    assert abs(float(played[1]) - 3.0) < 0.2, "30 frames at 10 fps"
