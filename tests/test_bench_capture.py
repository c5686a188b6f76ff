"""The capture benchmark reads real RTSP cameras (loopback server, password) in each mode and measures them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.sources.nvdec_stream import nvdec_stream_available

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="the loopback server needs PyAV")


def bench_capture(video: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "bench" / "bench_capture.py"), "--video", str(video), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)


def test_each_mode_reads_every_camera_at_the_rate_the_server_sends(h264_video: Path) -> None:
    modes = "demux,pyav-group"  # PyAV in a capture thread: the pipeline tests read cameras that way
    done = bench_capture(h264_video, "--streams", "2", "--modes", modes, "--warmup", "3", "--seconds", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    document: dict[str, Any] = json.loads(done.stdout)
    assert document["sent_fps"] == pytest.approx(20.0, rel=0.05)
    assert [p["mode"] for p in document["phases"]] == modes.split(",")
    for phase in document["phases"]:
        assert phase["cameras"] == 2 and not phase["errors"], phase
        assert 0 < phase["all_reading_after_s"] < 4, phase
        assert phase["own_cpu_us_per_frame"] > 0, phase
        assert phase["share_min"] > 0.8 and phase["fps_min"] > 16, phase  # paced at 20 fps: none starved
        assert phase["share_mean"] < 1.3, phase  # no faster than sent: the server paces
        assert phase["lock_wait_ms"]["p99"] >= phase["lock_wait_ms"]["mean"] >= 0, phase
    assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.skipif(nvdec_stream_available(), reason="NVDEC runs here")
def test_a_mode_that_cannot_run_reports_why_per_camera(h264_video: Path) -> None:
    done = bench_capture(h264_video, "--streams", "1", "--modes", "nvdec", "--warmup", "1", "--seconds", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    (phase,) = json.loads(done.stdout)["phases"]
    assert phase["fps_min"] == 0 and len(phase["errors"]) == 1, phase
    assert "NVDEC" in phase["errors"][0] and "s3cret" not in phase["errors"][0], phase


def test_an_unknown_mode_is_one_line_and_a_non_zero_exit(h264_video: Path) -> None:
    done = bench_capture(h264_video, "--modes", "demux,gstreamer")
    assert done.returncode != 0 and "unknown gstreamer" in done.stderr and "Traceback" not in done.stderr
