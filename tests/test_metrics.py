"""Prometheus metrics, health, readiness and the status file, scraped over real HTTP from running pipelines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_sources import FakeEngine

from pipeline.config import StreamConfig, build_config
from pipeline.runner import Pipeline


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class SlowEngine(FakeEngine):
    """30 ms a frame: slower than the paced camera, so its queue drops frames."""

    def infer(self, inputs: list[np.ndarray], shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        time.sleep(0.03)
        return super().infer(inputs, shapes)


class StuckEngine(FakeEngine):
    """Answers a few frames, then hangs in infer until released (a wedged GPU driver, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.release = threading.Event()

    def infer(self, inputs: list[np.ndarray], shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        self.calls += 1
        if self.calls > 5:
            self.release.wait(30)
        return super().infer(inputs, shapes)


def running(config: dict[str, Any], engine: Any) -> Pipeline:
    pipeline = Pipeline(build_config(config, "t"), engine_factory=lambda _s, _n: engine)
    pipeline.start()
    return pipeline


def test_metrics_health_and_readiness_of_a_running_pipeline(tiny_video: Path, tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    config = {
        "streams": [
            {"id": "cam", "source": {"type": "file", "path": str(tiny_video), "loop": True, "realtime": True}},
            {"id": "gen", "source": "synthetic://?frames=20&width=96&height=64"},
        ],
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "metrics": {"port": 0, "ready_share": 0.5, "status_file": str(status_file)},
        "tracking": {"enabled": False},
    }
    pipeline = running(config, SlowEngine())
    try:
        port = pipeline.metrics_port
        assert port
        time.sleep(3.0)
        code, text = get(port, "/metrics")
        assert code == 200
        got = samples(text)
        captured = got[("edgesight_frames_captured_total", (("stream", "cam"),))]
        published = got[("edgesight_frames_published_total", (("stream", "cam"),))]
        assert captured > 40 and 0 < published <= captured
        dropped = sum(
            v
            for (name, labels), v in got.items()
            if name == "edgesight_frames_dropped_total" and ("stream", "cam") in labels
        )
        assert dropped > 0, "the slow engine makes the paced camera drop frames, and they are counted"
        latency_count = got[("edgesight_latency_seconds_count", (("stream", "cam"),))]
        assert 0 < latency_count <= published + 2
        assert got[("edgesight_stage_seconds_count", (("stage", "infer"),))] > 0
        assert ("edgesight_queue_depth", (("queue", "capture.cam"),)) in got
        assert ("edgesight_bus_sent_total", ()) in got
        assert got[("edgesight_sink_failures_total", (("sink", "bus"),))] == 0, "every sink's series from the start"
        engine = [labels for (name, labels) in got if name == "edgesight_engine_info"]
        assert engine and ("backend", "fake") in engine[0]
        states = {labels: v for (name, labels), v in got.items() if name == "edgesight_stream_state"}
        assert states[(("state", "running"), ("stream", "cam"))] == 1.0
        assert all(name.startswith("edgesight_") for name, _ in got)

        code, body = get(port, "/healthz")
        assert code == 200 and json.loads(body)["healthy"] is True
        code, body = get(port, "/readyz")
        ready = json.loads(body)
        assert code == 200 and ready["ready"] and ready["needed"] == 1
        assert get(port, "/nothing")[0] == 404
        status = json.loads(status_file.read_text())
        assert status["healthy"] and status["ready"] and set(status["streams"]) == {"cam", "gen"}
        check = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "health", "--status-file", str(status_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stderr
    finally:
        pipeline.stop()
        pipeline.close()
    assert json.loads(status_file.read_text())["stopping"] is True
    check = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "health", "--status-file", str(status_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1 and "stopping" in check.stderr


def controlled(streams: list[dict[str, Any]]) -> dict[str, Any]:
    """A config that takes streams at run time and serves metrics on a free port, without tracking."""
    return {
        "streams": streams,
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "control": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "metrics": {"port": 0},
        "tracking": {"enabled": False},
    }


def test_each_stream_s_counters_are_series_at_zero_before_anything_happens() -> None:
    """Drops, bus drops, reconnects and image-operation time exist from a stream's start (``rate()`` and alerts
    work before the first drop), for a stream added at run time too."""
    dead = {"base_s": 5, "cap_s": 5}
    streams = [
        {"id": "gen", "source": "synthetic://?frames=500&width=96&height=64"},
        {"id": "cam", "source": "rtsp://127.0.0.1:1/live", "reconnect": dead, "preprocess": [{"op": "flip"}]},
    ]
    pipeline = running(controlled(streams), FakeEngine())
    try:
        pipeline.add_stream(
            StreamConfig.model_validate({"id": "late", "source": "rtsp://127.0.0.1:1/b", "reconnect": dead})
        )
        port = pipeline.metrics_port
        assert port
        code, text = get(port, "/metrics")
    finally:
        pipeline.stop()
        pipeline.close()
    assert code == 200
    got = samples(text)
    for sid in ("gen", "cam", "late"):
        queue = (("queue", f"capture.{sid}"), ("reason", "queue_full_drop_oldest"), ("stream", sid))
        assert got.get(("edgesight_frames_dropped_total", queue)) == 0.0, sid
        assert got.get(("edgesight_bus_dropped_total", (("topic", f"detections.{sid}"),))) == 0.0, sid
        assert got.get(("edgesight_reconnects_total", (("stream", sid),))) == 0.0, sid
    assert got.get(("edgesight_image_op_seconds_total", (("op", "flip"), ("stream", "cam")))) == 0.0


def test_a_stuck_stage_fails_healthz_and_offline_cameras_fail_readyz() -> None:
    engine = StuckEngine()
    config = {
        "streams": [
            {"id": "gen", "source": "synthetic://?frames=500&width=96&height=64"},
            {"id": "dead", "source": "rtsp://127.0.0.1:1/live", "reconnect": {"base_s": 5, "cap_s": 5}},
        ],
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
        "metrics": {"port": 0, "stale_after_s": 1.0},
        "tracking": {"enabled": False},
    }
    pipeline = running(config, engine)
    try:
        port = pipeline.metrics_port
        assert port
        deadline = time.monotonic() + 20
        while get(port, "/healthz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        code, body = get(port, "/healthz")
        assert code == 503 and "infer" in json.loads(body)["stuck"]  # (upstream stages wait behind it)
        code, body = get(port, "/readyz")
        ready = json.loads(body)
        assert code == 503 and ready["streams"]["dead"]["state"] in ("connecting", "reconnecting")
    finally:
        engine.release.set()
        pipeline.stop()
        pipeline.close()


def test_metrics_port_from_the_command_line(arch_weights: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            "--source",
            "synthetic://?frames=400&width=160&height=96",
            "--model",
            str(arch_weights),
            "--imgsz",
            "160",
            "--publish",
            f"tcp://127.0.0.1:{free_port()}",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                _code, text = get(port, "/metrics")
            except OSError:
                time.sleep(0.3)
                continue
            if "edgesight_frames_published_total" in text and "edgesight_latency_seconds_count" in text:
                break
            time.sleep(0.3)
        names = {name for name, _ in samples(text)}
        assert {"edgesight_frames_published_total", "edgesight_latency_seconds_count", "edgesight_engine_info"} <= names
        assert get(port, "/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_a_stream_added_at_run_time_is_wired_as_at_start_and_removed_completely() -> None:
    """Its capture thread feeds the stage histogram and its frames their series; once removed, its source is let
    go of, its preprocess thread reads its queue no more, and the rest keeps running."""
    first = {"id": "first", "source": "synthetic://?frames=5&width=96&height=64"}
    pipeline = running(controlled([first]), FakeEngine())
    try:
        port = pipeline.metrics_port
        assert port
        state = {s.stream_id: s for s in pipeline.stream_states()}
        deadline = time.monotonic() + 30
        while state["first"].state != "ended" and time.monotonic() < deadline:
            time.sleep(0.05)
            state = {s.stream_id: s for s in pipeline.stream_states()}
        capture = (("stage", "capture"),)
        before = samples(get(port, "/metrics")[1])[("edgesight_stage_seconds_count", capture)]
        late = {"id": "late", "source": "synthetic://?frames=100000&width=96&height=64", "preprocess": [{"op": "flip"}]}
        pipeline.add_stream(StreamConfig.model_validate(late))
        while state.get("late") is None or state["late"].published < 30:
            assert time.monotonic() < deadline + 30, "the added stream published too little"
            time.sleep(0.05)
            state = {s.stream_id: s for s in pipeline.stream_states()}
        got = samples(get(port, "/metrics")[1])
        assert got[("edgesight_stage_seconds_count", capture)] >= before + 30, "its capture thread is timed"
        assert got[("edgesight_frames_published_total", (("stream", "late"),))] >= 30
        assert got[("edgesight_image_op_frames_total", (("stream", "late"),))] >= 30
        readers = [t for t in pipeline.stages if t.name.startswith("preprocess")]
        assert any("capture.late" in t.inputs.names for t in readers)  # type: ignore[attr-defined]
        pipeline.remove_stream("late")
        while state["late"].state != "ended":
            assert time.monotonic() < deadline + 60, "the removed stream never ended"
            time.sleep(0.05)
            state = {s.stream_id: s for s in pipeline.stream_states()}
        assert not any("capture.late" in t.inputs.names for t in readers), "its queue is read no more"  # type: ignore[attr-defined]
        source = next(t for t in pipeline.stages if t.name == "capture-late").source  # type: ignore[attr-defined]
        assert source._index == source.frames, "its source was released (a synthetic one jumps to its end)"
        assert not pipeline.wait(0.2), "the pipeline keeps running without it"
    finally:
        pipeline.stop()
        pipeline.close()
