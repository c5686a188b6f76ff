"""A connection to an MQTT broker that never blocks its caller: a bounded outbox, a sender thread, and paho-mqtt's
own network thread reconnecting with backoff."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass

import paho.mqtt.client as paho

from pipeline.config import MqttConfig
from pipeline.queues import BoundedQueue, OverflowPolicy
from pipeline.secrecy import redact

log = logging.getLogger(__name__)

RETRY_S = 0.2
"""How long the sender waits before offering paho a message again (paho's own queue full, or not connected)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False


class MqttLink:
    """Publishes to one broker from any thread without waiting for it.

    :meth:`publish` puts a message in a bounded outbox (past ``outbox`` messages the oldest is dropped and
    counted) and returns; a sender thread hands messages to paho while the broker is connected, and paho's
    network thread connects, reconnects with backoff (``reconnect_min_s`` doubling to ``reconnect_max_s``) and
    resends QoS 1 and 2 messages a lost connection left unacknowledged. ``<topic_prefix>/available`` says
    ``online`` while connected; the broker says ``offline`` there (the last will) when the connection dies.
    """

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.availability_topic = f"{config.topic_prefix}/available"
        self.unsent = 0
        """Messages still waiting at shutdown."""
        self.sent = 0
        """Messages handed to paho while connected."""
        self.connections = 0
        """Successful connections so far (1 once connected; each reconnect adds one)."""
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._outbox: BoundedQueue[Outgoing] = BoundedQueue(
            "mqtt", config.outbox, OverflowPolicy.DROP_OLDEST, self._closed
        )
        self._aside: Outgoing | None = None
        """A message paho did not take (not connected, its queue full): offered again before the next one."""
        self._client = self._make_client()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._outage_logged = False

    @property
    def where(self) -> str:
        return f"mqtt://{self.config.host}:{self.config.port}"

    def _make_client(self) -> paho.Client:
        cfg = self.config
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=paho.MQTTv311)
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password is not None else None
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            client.tls_set(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(self.availability_topic, b"offline", qos=cfg.qos, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(cfg.reconnect_min_s)), max_delay=round(cfg.reconnect_max_s))
        client.max_queued_messages_set(max(cfg.outbox, 1))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        return client

    def start(self) -> None:
        """Connect in the background (a broker that is not there yet is retried, never waited for)."""
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        self._sender.start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue one message; never blocks. A full outbox drops its oldest message (counted in ``dropped``)."""
        self._outbox.put(Outgoing(topic, payload, retain))

    @property
    def dropped(self) -> int:
        """Messages lost: dropped by the full outbox (the oldest first) or still waiting at shutdown."""
        return sum(self._outbox.drops().values()) + self.unsent

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def waiting(self) -> int:
        """Messages in the outbox."""
        return len(self._outbox) + (self._aside is not None)

    def close(self, drain_s: float | None = None) -> None:
        """Send what is queued (waiting at most ``drain_s``, the config's by default, for the broker), say
        ``offline``, and disconnect. What could not be sent by then is counted in ``dropped``."""
        drain_s = self.config.drain_s if drain_s is None else drain_s
        if self._sender.is_alive():
            self._outbox.join(drain_s)
        self._closed.set()
        if self._sender.is_alive():
            self._sender.join(timeout=2.0)
        self.unsent = self.waiting
        if self.unsent:
            log.warning("MQTT broker %s: %d messages not sent at shutdown", self.where, self.unsent)
        if self.connected:
            offline = self._client.publish(self.availability_topic, b"offline", qos=self.config.qos, retain=True)
            offline.wait_for_publish(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()

    def _send_loop(self) -> None:
        while not self._closed.is_set():
            if self._aside is None and not self.connected:  # messages wait in the outbox, which keeps the newest
                self._closed.wait(RETRY_S)
                continue
            message = self._aside or self._outbox.get(timeout=1.0)
            if message is None:
                continue
            self._aside = None
            sent = (
                self.connected
                and self._client.publish(message.topic, message.payload, qos=self.config.qos, retain=message.retain).rc
                == paho.MQTT_ERR_SUCCESS
            )
            if not sent:  # the connection just went, or paho's queue is full: this one first, soon
                self._aside = message
                self._closed.wait(RETRY_S)
                continue
            self.sent += 1
            self._outbox.task_done()  # close() waits for every message to be handed over

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            if not self._outage_logged:
                self._outage_logged = True
                log.warning("MQTT broker %s refused the connection: %s; retrying", self.where, redact(str(reason)))
            return
        self.connections += 1
        client.publish(self.availability_topic, b"online", qos=self.config.qos, retain=True)
        if self._outage_logged:
            log.info("MQTT broker %s is back", self.where)
        self._outage_logged = False
        self._connected.set()

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("cannot reach the MQTT broker %s; retrying, messages wait in the outbox", self.where)

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._closed.is_set() and not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "lost the MQTT broker %s (%s); reconnecting, messages wait in the outbox (at most %d)",
                self.where,
                redact(str(reason)),
                self.config.outbox,
            )
