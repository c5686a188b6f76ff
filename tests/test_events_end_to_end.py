"""Real footage end to end: people1.mp4 with a line and a zone gives, for each crossing and entry, a playable clip
from ``pre_s`` before to ``post_s`` after, a snapshot, a message on a real MQTT broker and a webhook POST, all
with the event's id, and the HTTP API lists them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from brokers import MOSQUITTO, MOSQUITTO_PASSWD, PASSWORD, USER, Broker, MqttWatcher
from conftest import free_port
from test_api import call
from test_event_sinks import Endpoint

from pipeline.config import build_config
from pipeline.runner import Pipeline
from pipeline.schema import EventMessage, Message
from pipeline.subscriber import Subscriber

CLIP_KINDS = ("line_cross", "zone_enter")
PRE_S, POST_S = 1.5, 1.0


def packets_of(video: Path, keyframes: bool = True) -> list[bytes]:
    with av.open(str(video)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size and (keyframes or not p.is_keyframe)]


@pytest.mark.skipif(not (MOSQUITTO and MOSQUITTO_PASSWD), reason="needs Debian's mosquitto (.ci/run installs it)")
def test_people1_events_reach_every_output_with_their_clip_and_snapshot(people1: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path, free_port()).start()
    watcher = MqttWatcher(broker.port).start()
    hook = Endpoint()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "streams": [
            {
                "id": "street",
                "source": {"type": "file", "path": str(people1), "decoder": "pyav"},
                "lines": [{"name": "middle", "points": [[0.5, 0.0], [0.5, 1.0]]}],
                "zones": [{"name": "left", "points": [[0.0, 0.0], [0.45, 0.0], [0.45, 1.0], [0.0, 1.0]]}],
            }
        ],
        # What is checked is where events go, not detection: a 320 input halves the run (23 clipped events).
        "model": {"path": "edgesight-det", "device": "cpu", "imgsz": 320},
        "publish": {
            "endpoint": endpoint,
            "wait_for_subscriber": True,
            "subscriber_timeout_s": 20,
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": USER, "password": PASSWORD},
            "webhook": {"url": hook.url},
        },
        "metrics": {"port": 0, "api": {}},
        "events": {
            "store": {"dir": str(tmp_path / "events")},
            "snapshots": {},
            "clips": {"pre_s": PRE_S, "post_s": POST_S, "kinds": list(CLIP_KINDS)},
        },
    }
    pipeline = Pipeline(build_config(config, "test"))
    messages: list[Message] = []
    try:
        with Subscriber(endpoint) as sub:
            pipeline.start()
            deadline = time.monotonic() + 300
            while not pipeline.wait(0.05):
                assert time.monotonic() < deadline, "people1.mp4 did not finish in 5 minutes"
                while (msg := sub.recv(0.0)) is not None:
                    messages.append(msg)
            while (msg := sub.recv(0.5)) is not None:
                messages.append(msg)
        port = pipeline.metrics_port
        assert port
        code, _, body = call(port, "GET", "/api/v1/events?limit=1000")
        listed = {e["event_id"]: e for e in json.loads(body)["events"]}
        assert code == 200
        check_outputs(messages, listed, watcher, hook, port, people1)
    finally:
        pipeline.stop()
        pipeline.close()
        watcher.stop()
        broker.stop()
        hook.close()


def check_outputs(
    messages: list[Message], listed: dict[str, Any], watcher: MqttWatcher, hook: Endpoint, port: int, people1: Path
) -> None:
    events = [m for m in messages if isinstance(m, EventMessage)]
    clipped = [m for m in events if m.kind in CLIP_KINDS]
    assert len(clipped) >= 2, f"people cross the middle and enter the left: {[m.kind for m in events]}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(watcher.on("edgesight/street/events")) < len(events):
        time.sleep(0.05)
    on_mqtt = {json.loads(m.payload)["event_id"] for m in watcher.on("edgesight/street/events")}
    posted = {body["event_id"] for body in hook.bodies}
    file_packets = set(packets_of(people1, keyframes=False))
    fps = float(cv2.VideoCapture(str(people1)).get(cv2.CAP_PROP_FPS))
    for message in clipped:
        event_id = message.event_id
        assert event_id in on_mqtt and event_id in posted and event_id in listed, f"{event_id} everywhere"
        assert message.raw["clip"] == event_id and message.raw["snapshot"] == event_id
        assert listed[event_id]["snapshot"] and listed[event_id]["clip"], listed[event_id]
        code, headers, jpeg = call(port, "GET", f"/api/v1/events/{event_id}/snapshot.jpg")
        assert code == 200 and headers["content-type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[:2] == (360, 640)
        code, headers, mp4 = call(port, "GET", f"/api/v1/events/{event_id}/clip.mp4")
        assert code == 200 and headers["content-type"] == "video/mp4"
        check_clip(mp4, message.raw["pts_ms"] / 1000.0, fps, file_packets, listed[event_id])


def check_clip(mp4: bytes, event_s: float, fps: float, file_packets: set[bytes], listed: dict[str, Any]) -> None:
    """The clip decodes whole, holds the file's own pictures and spans ``pre_s`` before to ``post_s`` after."""
    import io

    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        frames = [float(f.pts * f.time_base) for f in container.decode(stream)]
    with av.open(io.BytesIO(mp4)) as container:
        inter = [bytes(p) for p in container.demux(video=0) if p.size and not p.is_keyframe]
    assert inter and all(p in file_packets for p in inter), "the file's own packets, not encoded again"
    duration = frames[-1] - frames[0] + 1 / fps
    start, end = listed["clip_start"], listed["clip_end"]
    assert abs(duration - (end - start + 1 / fps)) < 0.1, "every frame of its span decodes"
    assert start <= max(0.0, event_s - PRE_S) + 0.05, f"starts pre_s before the event ({start} vs {event_s})"
    assert start >= event_s - PRE_S - 10.5, "from the keyframe before, no further"
    assert end >= min(event_s + POST_S, 28.5) - 0.1, f"ends post_s after it ({end} vs {event_s})"
