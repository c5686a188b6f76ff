"""MQTT against a real broker (mosquitto on loopback, with a password): delivery, the outbox while the broker is
away, its coming back, and a pipeline's events, counts and states on it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from brokers import MOSQUITTO, MOSQUITTO_PASSWD, PASSWORD, USER, Broker, MqttWatcher
from conftest import free_port

from pipeline.config import MqttConfig
from pipeline.mqtt import MqttLink

pytestmark = pytest.mark.skipif(
    not (MOSQUITTO and MOSQUITTO_PASSWD), reason="needs Debian's mosquitto (.ci/run installs it)"
)


def link_config(port: int, **extra: object) -> MqttConfig:
    return MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "username": USER, "password": PASSWORD, "reconnect_min_s": 1,
         "reconnect_max_s": 1, **extra}
    )  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Broker(tmp_path, free_port()).start()
    yield b
    b.stop()


@pytest.fixture
def watcher(broker: Broker):  # type: ignore[no-untyped-def]
    w = MqttWatcher(broker.port).start()
    yield w
    w.stop()


def payloads(watcher: MqttWatcher, topic: str) -> list[bytes]:
    return [m.payload for m in watcher.on(topic)]


def test_messages_reach_an_authenticated_broker_and_the_link_says_online(broker: Broker, watcher: MqttWatcher) -> None:
    link = MqttLink(link_config(broker.port))
    link.start()
    try:
        for i in range(5):
            link.publish("edgesight/cam/events", f"m{i}".encode())
        watcher.wait_for("edgesight/cam/events", 5)
        assert payloads(watcher, "edgesight/cam/events") == [f"m{i}".encode() for i in range(5)]
        assert payloads(watcher, "edgesight/available")[-1] == b"online"
    finally:
        link.close()
    watcher.wait_for("edgesight/available", 2)
    assert payloads(watcher, "edgesight/available")[-1] == b"offline", "closing says offline (retained)"
    assert link.dropped == 0 and link.sent == 5


def test_a_wrong_password_is_reported_without_the_password(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    link = MqttLink(link_config(broker.port, password="not-the-password"))
    with caplog.at_level(logging.WARNING, logger="pipeline.mqtt"):
        link.start()
        link.publish("edgesight/cam/events", b"x")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("refused" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
        link.close(drain_s=0.1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused the connection" in text and "127.0.0.1" in text
    assert "not-the-password" not in text
    assert not link.connected and link.sent == 0


def test_while_the_broker_is_away_the_outbox_keeps_the_newest_and_counts_the_rest(tmp_path: Path) -> None:
    broker = Broker(tmp_path, free_port()).start()
    watcher = MqttWatcher(broker.port).start()  # its session outlives the broker's restart
    broker.stop()
    link = MqttLink(link_config(broker.port, outbox=5))
    link.start()
    try:
        started = time.perf_counter()
        for i in range(12):
            link.publish("edgesight/cam/events", f"m{i}".encode())
        assert time.perf_counter() - started < 2.0, "publishing never waits for the broker"
        assert link.dropped == 7 and link.waiting == 5 and not link.connected
        broker.start()
        watcher.wait_for("edgesight/cam/events", 5)
        time.sleep(0.5)
        assert payloads(watcher, "edgesight/cam/events") == [f"m{i}".encode() for i in range(7, 12)]
    finally:
        link.close()
        watcher.stop()
        broker.stop()


def test_the_link_comes_back_after_the_broker_restarts_and_sends_what_waited(
    broker: Broker, watcher: MqttWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    link = MqttLink(link_config(broker.port))
    link.start()
    try:
        for i in range(3):
            link.publish("edgesight/cam/events", f"before{i}".encode())
        watcher.wait_for("edgesight/cam/events", 3)
        with caplog.at_level(logging.INFO, logger="pipeline.mqtt"):
            broker.stop()
            deadline = time.monotonic() + 10
            while link.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not link.connected, "the link noticed the broker going"
            for i in range(4):
                link.publish("edgesight/cam/events", f"during{i}".encode())
            broker.start()
            watcher.wait_for("edgesight/cam/events", 7, timeout_s=30)
        want = [f"before{i}".encode() for i in range(3)] + [f"during{i}".encode() for i in range(4)]
        got = payloads(watcher, "edgesight/cam/events")
        assert list(dict.fromkeys(got)) == want, f"every message, in order (QoS 1: at least once): {got}"
        assert link.connections == 2 and link.dropped == 0
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "lost the MQTT broker" in text and "is back" in text and PASSWORD not in text
    finally:
        link.close()


def test_state_and_discovery_topics_are_retained(broker: Broker) -> None:
    from pipeline.sinks.mqtt import MqttSink

    sink = MqttSink(link_config(broker.port, discovery=True))
    try:
        sink.on_stream_added("door")
        sink.on_status("door", "online", {}, 1.0)
        sink._counts("door", {"lines": {"gate": {"in": {"person": 2}, "out": {}}}, "zones": {"kerb": {}}})
        deadline = time.monotonic() + 10
        while sink.link.waiting and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sink.close()
    late = MqttWatcher(broker.port, topics="#").start()  # a subscriber that comes afterwards
    try:
        state = json.loads(late.wait_for("edgesight/door/state", 1)[0].payload)
        assert state["event"] == "online" and state["stream_id"] == "door"
        configs = {m.topic: json.loads(m.payload) for m in late.messages if m.topic.startswith("homeassistant/")}
        assert set(configs) == {
            "homeassistant/binary_sensor/edgesight_door_state/config",
            "homeassistant/sensor/edgesight_door_line_gate_in/config",
            "homeassistant/sensor/edgesight_door_line_gate_out/config",
            "homeassistant/sensor/edgesight_door_zone_kerb/config",
        }
        online = configs["homeassistant/binary_sensor/edgesight_door_state/config"]
        assert online["state_topic"] == "edgesight/door/state" and online["availability_topic"] == "edgesight/available"
    finally:
        late.stop()
