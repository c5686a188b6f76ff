"""Events leaving the box by webhook (a real HTTP server on loopback) and by MQTT (a real broker), beside the bus:
the same events, none slowing the pipeline, none lost while a broker restarts."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from brokers import MOSQUITTO, MOSQUITTO_PASSWD, PASSWORD, USER, Broker, MqttWatcher
from conftest import free_port
from helpers import Collected, config_for, run_and_collect

from pipeline.analytics.events import Event
from pipeline.config import WebhookConfig
from pipeline.schema import CountsMessage, EventMessage
from pipeline.sinks import StreamEnding
from pipeline.sinks.webhook import WebhookSink
from pipeline.synth.writer import write_scene

GATE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}
ZONE = {"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1.0], [0.1, 1.0]]}
needs_broker = pytest.mark.skipif(
    not (MOSQUITTO and MOSQUITTO_PASSWD), reason="needs Debian's mosquitto (.ci/run installs it)"
)


class Endpoint:
    """An HTTP server on loopback that keeps each POST; ``answers`` scripts its first status codes, ``hold``
    keeps a request waiting until set."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answers = list(answers or [])
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.arrived.set()
                endpoint.hold.wait(10)
                code = endpoint.answers.pop(0) if endpoint.answers else 200
                if code < 300:
                    endpoint.bodies.append(json.loads(body))
                    endpoint.headers.append(dict(self.headers))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


def an_event(i: int) -> Event:
    return Event("new", f"e{i}", "line_cross", "cam", i, "person", 0, float(i), None, i, 0.0, (0, 0, 1, 1), 0.9)


def sink_for(url: str, **extra: Any) -> WebhookSink:
    return WebhookSink(WebhookConfig.model_validate({"url": url, "retry_wait_s": 0.05, **extra}))


def test_each_event_is_posted_and_5xx_answers_are_retried(http_endpoint: Endpoint) -> None:
    http_endpoint.answers = [503, 502]
    sink = sink_for(http_endpoint.url)
    ending = StreamEnding("cam", events=tuple(an_event(i) for i in range(3)))
    sink.on_stream_end(ending)
    sink.close()
    assert [b["event_id"] for b in http_endpoint.bodies] == ["e0", "e1", "e2"]
    assert http_endpoint.bodies[0]["schema"] == "edgesight.event/1" and sink.delivered == 3 and sink.drops == 0


def test_a_4xx_answer_is_not_retried_and_credentials_in_the_url_become_basic_auth(
    http_endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    http_endpoint.answers = [400]
    url = http_endpoint.url.replace("http://", "http://hooker:hook-s3cret@")
    sink = sink_for(url, headers={"X-Token": "t0ken-value"})
    with caplog.at_level(logging.DEBUG, logger="pipeline.sinks.webhook"):
        sink.on_stream_end(StreamEnding("cam", events=(an_event(0), an_event(1))))
        sink.close()
    assert [b["event_id"] for b in http_endpoint.bodies] == ["e1"], "the refused one is not sent again"
    headers = http_endpoint.headers[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"hooker:hook-s3cret").decode()
    assert headers["X-Token"] == "t0ken-value"
    assert sink.failed == 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 400" in text and "hook-s3cret" not in text and "hooker" not in text and "t0ken" not in text


def test_a_slow_endpoint_costs_the_oldest_queued_events_never_a_wait(http_endpoint: Endpoint) -> None:
    http_endpoint.hold.clear()
    sink = sink_for(http_endpoint.url, queue=3)
    sink.on_stream_end(StreamEnding("cam", events=(an_event(0),)))
    assert http_endpoint.arrived.wait(10), "the first event is being posted"
    started = time.perf_counter()
    sink.on_stream_end(StreamEnding("cam", events=tuple(an_event(i) for i in range(1, 10))))
    assert time.perf_counter() - started < 2.0, "the publish thread never waits for the endpoint"
    assert sink.dropped == 6
    http_endpoint.hold.set()
    sink.close()
    assert [b["event_id"] for b in http_endpoint.bodies] == ["e0", "e7", "e8", "e9"]


def test_an_endpoint_that_is_not_there_costs_counted_events(caplog: pytest.LogCaptureFixture) -> None:
    sink = sink_for(f"http://127.0.0.1:{free_port()}/hook", retries=2)
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.webhook"):
        sink.on_stream_end(StreamEnding("cam", events=(an_event(0),)))
        sink.close()
    assert sink.failed == 1 and sink.delivered == 0
    assert any("after 3 attempts" in r.getMessage() for r in caplog.records)


def run_scene_with_sinks(
    tmp_path: Path, endpoint: str, broker: Broker, hook: Endpoint, **stream_extra: Any
) -> tuple[Collected, MqttWatcher]:
    scene = write_scene(tmp_path / "scene", 5, 300, occlusion=False)
    stream = {"id": "s", "source": str(scene / "scene.mp4"), "lines": [GATE], "zones": [ZONE], **stream_extra}
    mqtt = {"host": "127.0.0.1", "port": broker.port, "username": USER, "password": PASSWORD,
            "discovery": True, "reconnect_min_s": 1, "reconnect_max_s": 1}  # fmt: skip
    publish = {"mqtt": mqtt, "webhook": {"url": hook.url}}
    watcher = MqttWatcher(broker.port).start()
    config = config_for(endpoint, [stream], {"path": "edgesight-det", "imgsz": 416}, publish)
    return run_and_collect(config), watcher


@needs_broker
def test_a_pipeline_s_events_reach_the_bus_the_broker_and_the_webhook_alike(
    tmp_path: Path, endpoint: str, http_endpoint: Endpoint
) -> None:
    broker = Broker(tmp_path, free_port()).start()
    try:
        got, watcher = run_scene_with_sinks(tmp_path, endpoint, broker, http_endpoint)
        bus_events = [(m.event_id, m.type, m.frame_index) for m in got.messages if isinstance(m, EventMessage)]
        assert any(kind == "new" for _, kind, _ in bus_events) and len(bus_events) >= 5
        state = json.loads(watcher.wait_for("edgesight/s/state", 1)[-1].payload)
        deadline = time.monotonic() + 10
        while state["event"] != "eos" and time.monotonic() < deadline:
            time.sleep(0.05)
            state = json.loads(watcher.on("edgesight/s/state")[-1].payload)
        assert state["event"] == "eos"
        mqtt_events = [json.loads(m.payload) for m in watcher.on("edgesight/s/events")]
        assert [(e["event_id"], e["type"], e["frame_index"]) for e in mqtt_events] == bus_events
        assert [(b["event_id"], b["type"], b["frame_index"]) for b in http_endpoint.bodies] == bus_events
        bus_counts = [m for m in got.messages if isinstance(m, CountsMessage)][-1]
        mqtt_counts = json.loads(watcher.on("edgesight/s/counts")[-1].payload)
        assert mqtt_counts["lines"] == bus_counts.lines and mqtt_counts["zones"] == bus_counts.zones
        discovered = {m.topic for m in watcher.messages if m.topic.startswith("homeassistant/")}
        assert "homeassistant/binary_sensor/edgesight_s_state/config" in discovered
        assert "homeassistant/sensor/edgesight_s_line_gate_in/config" in discovered
        assert all(PASSWORD.encode() not in m.payload for m in watcher.messages)
        watcher.stop()
    finally:
        broker.stop()


@needs_broker
def test_stopping_the_broker_mid_run_loses_no_frame_and_the_sink_reconnects(
    tmp_path: Path, endpoint: str, http_endpoint: Endpoint
) -> None:
    broker = Broker(tmp_path, free_port()).start()
    bounced = threading.Event()

    def bounce() -> None:  # stop the broker once the first event is on it; back 2 s later
        probe = MqttWatcher(broker.port, topics="edgesight/s/events").start()
        deadline = time.monotonic() + 120
        while not probe.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        probe.stop()
        broker.stop()
        time.sleep(2.0)
        broker.start()
        bounced.set()

    bouncer = threading.Thread(target=bounce, daemon=True)
    bouncer.start()
    try:
        got, watcher = run_scene_with_sinks(tmp_path, endpoint, broker, http_endpoint)
        bouncer.join(30)
        assert bounced.is_set(), "the broker went away and came back during the run"
        detections = got.detections("s")
        assert [m.seq for m in detections] == list(range(300)), "every frame published on the bus"
        assert got.report is not None and got.report.sink_drops == {}
        bus_events = [(m.event_id, m.type, m.frame_index) for m in got.messages if isinstance(m, EventMessage)]
        final = [m for m in got.messages if isinstance(m, CountsMessage)][-1]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not watcher.on("edgesight/s/counts"):
            time.sleep(0.05)
        mqtt_counts = json.loads(watcher.on("edgesight/s/counts")[-1].payload)
        assert mqtt_counts["frame_index"] == final.frame_index, "the stream's last counts reached the broker"
        mqtt_events = [
            (e["event_id"], e["type"], e["frame_index"])
            for e in map(json.loads, (m.payload for m in watcher.on("edgesight/s/events")))
        ]
        missing = [(i, e) for i, e in enumerate(bus_events) if e not in mqtt_events]
        assert list(dict.fromkeys(mqtt_events)) == bus_events, f"events waited in the outbox, none lost: {missing}"
        watcher.stop()
    finally:
        broker.stop()
