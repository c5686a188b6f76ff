"""Events, counts and stream states on an MQTT broker (``publish.mqtt``), with Home Assistant discovery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.config import MqttConfig
from pipeline.mqtt import MqttLink
from pipeline.schema import encode, status_body
from pipeline.sinks.base import Published, ResultSink, StreamEnding

ONLINE_STATES = ("start", "online", "running")
"""Status events after which a stream delivers frames (Home Assistant's connectivity sensor says ``ON``)."""


def jinja(expression: str) -> str:
    """A Home Assistant value template that renders ``expression``."""
    return "{{ " + expression + " }}"


class MqttSink(ResultSink):
    """``<prefix>/<stream>/events`` (each event, as on the bus), ``…/counts`` and ``…/state`` (the stream's last
    status message, retained), through a :class:`~pipeline.mqtt.MqttLink` that never blocks the publish thread."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, link: MqttLink | None = None) -> None:
        self.config = config
        self.link = link if link is not None else MqttLink(config)
        self.prefix = config.topic_prefix
        self._announced: dict[str, set[str]] = {}
        """Per stream, the Home Assistant entities announced so far."""
        self.link.start()

    @property
    def drops(self) -> int:
        return self.link.dropped

    def topic(self, stream_id: str, kind: str) -> str:
        return f"{self.prefix}/{stream_id}/{kind}"

    def on_stream_added(self, stream_id: str) -> None:
        if self.config.discovery:
            self._announce(stream_id, "state", self._state_entity(stream_id))

    def on_status(self, stream_id: str, event: str, extra: Mapping[str, Any], at: float) -> None:
        body = status_body(stream_id, event, at, **extra)
        self.link.publish(self.topic(stream_id, "state"), encode(body), retain=self.config.retain_state)

    def on_result(self, published: Published) -> None:
        for event in published.events:
            self.link.publish(self.topic(published.stream_id, "events"), encode(event.to_json()))
        if published.counts is not None:
            self._counts(published.stream_id, published.counts)

    def on_stream_end(self, ending: StreamEnding) -> None:
        for event in ending.events:
            self.link.publish(self.topic(ending.stream_id, "events"), encode(event.to_json()))
        if ending.counts is not None:
            self._counts(ending.stream_id, ending.counts)

    def close(self) -> None:
        self.link.close()

    def _counts(self, stream_id: str, counts: dict[str, Any]) -> None:
        self.link.publish(self.topic(stream_id, "counts"), encode(counts), retain=self.config.retain_state)
        if self.config.discovery:
            for key, entity in self._count_entities(stream_id, counts):
                self._announce(stream_id, key, entity)

    def _announce(self, stream_id: str, key: str, entity: dict[str, Any]) -> None:
        """Publish one Home Assistant discovery config (retained), once per entity."""
        announced = self._announced.setdefault(stream_id, set())
        if key in announced:
            return
        announced.add(key)
        component = "binary_sensor" if key == "state" else "sensor"
        unique_id = f"{self.config.client_id}_{stream_id}_{key}".replace("/", "_")
        entity |= {
            "unique_id": unique_id,
            "object_id": unique_id,
            "availability_topic": self.link.availability_topic,
            "device": {"identifiers": [f"{self.config.client_id}_{stream_id}"], "name": f"edgesight {stream_id}"},
        }
        topic = f"{self.config.discovery_prefix}/{component}/{unique_id}/config"
        self.link.publish(topic, encode(entity), retain=True)

    def _state_entity(self, stream_id: str) -> dict[str, Any]:
        return {
            "name": f"{stream_id} online",
            "device_class": "connectivity",
            "state_topic": self.topic(stream_id, "state"),
            "value_template": jinja(f"'ON' if value_json.event in {list(ONLINE_STATES)} else 'OFF'"),
        }

    def _count_entities(self, stream_id: str, counts: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """A sensor per line and direction (objects crossed, all classes) and per zone (objects inside now)."""
        topic = self.topic(stream_id, "counts")
        entities = []
        for line, directions in counts.get("lines", {}).items():
            for direction in directions:
                entities.append(
                    (
                        f"line_{line}_{direction}",
                        {
                            "name": f"{stream_id} {line} {direction}",
                            "state_topic": topic,
                            "state_class": "total_increasing",
                            "value_template": jinja(f"value_json.lines[{line!r}][{direction!r}].values() | sum"),
                        },
                    )
                )
        for zone in counts.get("zones", {}):
            entities.append(
                (
                    f"zone_{zone}",
                    {
                        "name": f"{stream_id} {zone} occupancy",
                        "state_topic": topic,
                        "state_class": "measurement",
                        "value_template": jinja(f"value_json.zones[{zone!r}].occupancy.values() | sum"),
                    },
                )
            )
        return entities
