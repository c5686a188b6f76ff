"""Streams added and removed while a pipeline runs, through `edgesight streams` and real sockets."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from conftest import free_port
from helpers import config_for, wait_for_message
from test_sources import FakeEngine

from pipeline.runner import Pipeline
from pipeline.schema import DetectionsMessage, StatusMessage
from pipeline.subscriber import Subscriber


def streams(control: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipeline.cli", "streams", *args, "--control", control, "--timeout", "5"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_streams_are_added_and_removed_at_run_time(endpoint: str) -> None:
    control = f"tcp://127.0.0.1:{free_port()}"
    config = config_for(
        endpoint,
        [{"id": "a", "source": "synthetic://?frames=100000&width=96&height=64"}],
        {"path": "unused"},
        publish={"wait_for_subscriber": False},
        control={"endpoint": control},
        tracking={"enabled": False},
    )
    pipeline = Pipeline(config, engine_factory=lambda _s, _n: FakeEngine())
    seen: list[Any] = []
    with Subscriber(endpoint) as sub:
        runner = threading.Thread(target=pipeline.run, daemon=True)
        runner.start()

        def until(pred: Any, timeout: float = 30) -> None:
            wait_for_message(sub, pred, timeout, seen)

        until(lambda m: isinstance(m, DetectionsMessage) and m.stream_id == "a")
        added = streams(control, "add", "--id", "b", "--source", "synthetic://?frames=30&width=96&height=64")
        assert added.returncode == 0 and "added 'b'" in added.stdout, added.stderr
        until(lambda m: isinstance(m, StatusMessage) and m.stream_id == "b" and m.event == "eos")
        again = streams(control, "add", "--id", "a", "--source", "synthetic://?frames=3")
        assert again.returncode == 2 and "already running" in again.stderr
        bad = streams(control, "add", "--id", "c", "--source", "/nowhere/missing.mp4")
        assert bad.returncode == 2 and "video file not found" in bad.stderr
        listed = streams(control, "list")
        assert listed.returncode == 0
        states = dict(line.split("\t")[:2] for line in listed.stdout.splitlines())
        assert states == {"a": "running", "b": "ended"}
        removed = streams(control, "remove", "a")
        assert removed.returncode == 0 and "removed 'a'" in removed.stdout
        until(lambda m: isinstance(m, StatusMessage) and m.stream_id == "a" and m.event == "stopped")
        gone = streams(control, "remove", "a")
        assert gone.returncode == 2 and "no running stream 'a'" in gone.stderr
        assert runner.is_alive(), "with streams controlled at run time the pipeline outlives its streams"
        pipeline.stop_event.set()
        runner.join(10)
    assert not runner.is_alive()
    b_seq = [m.seq for m in seen if isinstance(m, DetectionsMessage) and m.stream_id == "b"]
    assert b_seq == list(range(30)), "the added stream published every frame once, in order"
    b_status = [m.event for m in seen if isinstance(m, StatusMessage) and m.stream_id == "b"]
    assert b_status == ["start", "eos"]
    a_seq = [m.seq for m in seen if isinstance(m, DetectionsMessage) and m.stream_id == "a"]
    assert a_seq == list(range(a_seq[0], a_seq[0] + len(a_seq))), "the first stream was never disturbed"


def test_nobody_answering_is_one_line() -> None:
    result = streams(f"tcp://127.0.0.1:{free_port()}", "list")
    assert result.returncode == 2 and "no pipeline answered" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_with_curve_only_allowed_clients_can_steer(endpoint: str, tmp_path: Any) -> None:
    from pipeline.curve import generate

    generate(tmp_path, "server")
    generate(tmp_path / "clients", "ops")
    generate(tmp_path / "others", "stranger")
    control = f"tcp://127.0.0.1:{free_port()}"
    config = config_for(
        endpoint,
        [{"id": "a", "source": "synthetic://?frames=100000&width=96&height=64"}],
        {"path": "unused"},
        publish={
            "wait_for_subscriber": False,
            "curve": {"server_secret": str(tmp_path / "server.key_secret"), "clients": str(tmp_path / "clients")},
        },
        control={"endpoint": control},
        tracking={"enabled": False},
    )
    pipeline = Pipeline(config, engine_factory=lambda _s, _n: FakeEngine())
    pipeline.start()
    try:
        keys = ["--server-key", str(tmp_path / "server.key")]
        ok = streams(control, "list", *keys, "--client-key", str(tmp_path / "clients" / "ops.key_secret"))
        assert ok.returncode == 0 and ok.stdout.startswith("a\t"), ok.stderr
        refused = streams(control, "list", *keys, "--client-key", str(tmp_path / "others" / "stranger.key_secret"))
        assert refused.returncode == 2 and "no pipeline answered" in refused.stderr
        assert streams(control, "list").returncode == 2, "no keys, no answer"
    finally:
        pipeline.stop()
        pipeline.close()
