"""CurveZMQ on the bus, with real sockets: an allowed subscriber reads, any other receives nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.bus import BusPublisher
from pipeline.curve import CurveClient, CurveServer, generate
from pipeline.errors import ConfigError
from pipeline.schema import StatusMessage, status_body
from pipeline.subscriber import Subscriber


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    generate(tmp_path, "server")
    generate(tmp_path / "allowed", "alice")
    generate(tmp_path / "others", "mallory")
    return {
        "server_public": tmp_path / "server.key",
        "server_secret": tmp_path / "server.key_secret",
        "allowed": tmp_path / "allowed",
        "alice": tmp_path / "allowed" / "alice.key_secret",
        "mallory": tmp_path / "others" / "mallory.key_secret",
    }


def publish_for(bus: BusPublisher, stop: threading.Event) -> None:
    while not stop.is_set():
        bus.send("status.cam", status_body("cam", "start", time.time()))
        time.sleep(0.02)


def received(endpoint: str, curve: CurveClient | None, seconds: float) -> int:
    count = 0
    with Subscriber(endpoint, curve=curve) as sub:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if isinstance(sub.recv(0.1), StatusMessage):
                count += 1
    return count


def test_only_allowed_subscribers_receive_and_refusals_are_logged(
    keys: dict[str, Path], endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = CurveServer.load(keys["server_secret"], keys["allowed"])
    bus = BusPublisher(endpoint, curve=server)
    stop = threading.Event()
    sender = threading.Thread(target=publish_for, args=(bus, stop), daemon=True)
    sender.start()
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.curve"):
            alice = CurveClient.load(keys["server_public"], keys["alice"])
            mallory = CurveClient.load(keys["server_public"], keys["mallory"])
            assert received(endpoint, alice, 1.5) > 10
            assert received(endpoint, mallory, 1.5) == 0
            assert received(endpoint, None, 1.5) == 0  # no keys at all: the handshake never completes
    finally:
        stop.set()
        sender.join(2)
        bus.close()
    refusals = [r.getMessage() for r in caplog.records if "refused a subscriber" in r.getMessage()]
    assert refusals and any("DENIED" in m for m in refusals)


def test_key_files_are_checked_and_never_overwritten(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds only a public key"):
        CurveServer.load(keys["server_public"], keys["allowed"])
    with pytest.raises(ConfigError, match="key file not found"):
        CurveClient.load(tmp_path / "nope.key", keys["alice"])
    with pytest.raises(ConfigError, match="not a folder"):
        CurveServer.load(keys["server_secret"], tmp_path / "missing")
    with pytest.raises(ConfigError, match="exists"):
        generate(tmp_path, "server")
    assert oct(keys["server_secret"].stat().st_mode & 0o777) == "0o600"


def test_keys_generate_and_an_encrypted_run_from_the_command_line(tmp_path: Path, endpoint: str) -> None:
    def edgesight(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120
        )

    made = edgesight("keys", "generate", "--out", str(tmp_path / "keys"))
    assert made.returncode == 0 and "server.key_secret" in made.stdout
    edgesight("keys", "generate", "--out", str(tmp_path / "keys" / "clients"), "--name", "viewer")
    config = tmp_path / "curve.yaml"
    config.write_text(
        "streams:\n  - {id: gen, source: 'synthetic://?frames=30&width=96&height=64'}\n"
        f"publish:\n  endpoint: {endpoint}\n  wait_for_subscriber: true\n  subscriber_timeout_s: 30\n"
        f"  curve: {{server_secret: {tmp_path / 'keys' / 'server.key_secret'},"
        f" clients: {tmp_path / 'keys' / 'clients'}}}\n"
        "model: {path: edgesight-det, device: cpu}\ntracking: {enabled: false}\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(config)], stderr=subprocess.PIPE, text=True
    )
    watch = edgesight(
        "subscribe",
        "--endpoint",
        endpoint,
        "--topic",
        "detections.gen",
        "--count",
        "30",
        "--timeout",
        "60",
        "--server-key",
        str(tmp_path / "keys" / "server.key"),
        "--client-key",
        str(tmp_path / "keys" / "clients" / "viewer.key_secret"),
    )
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert watch.returncode == 0, watch.stderr
    assert len(watch.stdout.strip().splitlines()) == 30
