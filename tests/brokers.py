"""A real MQTT broker (Debian's mosquitto) on a loopback port, with a password, that tests stop and start again;
and a real subscriber to it."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
USER, PASSWORD = "edge", "s3cret-broker-pass"


class Broker:
    """mosquitto on ``127.0.0.1:port`` taking only ``USER``/``PASSWORD``."""

    def __init__(self, folder: Path, port: int) -> None:
        assert MOSQUITTO and MOSQUITTO_PASSWD, "mosquitto is not installed"
        self.port = port
        self.folder = folder
        passwords = folder / "passwd"
        passwords.touch(mode=0o600)
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwords), USER, PASSWORD], check=True, capture_output=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
            f"persistence true\npersistence_location {folder}/\n"
            # started as root (CI), mosquitto would switch to its own user, who cannot read the test's folder
            + (f"user {getpass.getuser()}\n" if os.geteuid() == 0 else "")
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.process = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert self.process.poll() is None, f"mosquitto exited: {self.process.stderr.read()!r}"  # type: ignore[union-attr]
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        """Go away as a broker that is shut down does (its sessions are kept for when it comes back)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class MqttWatcher:
    """A subscriber to every topic on the broker, keeping what arrives. Its session outlives a broker restart, so
    what is published while it reconnects waits for it."""

    port: int
    topics: str = "#"
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"watcher-{id(self)}", clean_session=False
        )
        self.client.username_pw_set(USER, PASSWORD)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(self.topics, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain)))

    def start(self) -> MqttWatcher:
        self.client.connect_async("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the watcher could not subscribe"
        return self

    def on(self, topic: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, count: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.on(topic)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.on(topic))} of {count} messages on {topic} within {timeout_s} s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
