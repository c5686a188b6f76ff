"""The pipeline-overhead benchmark runs and measures what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_overhead_benchmark_delivers_every_cameras_rate_and_prints_its_cost() -> None:
    cmd = [sys.executable, str(REPO / "bench" / "bench_overhead.py"), "--cameras", "4", "--seconds", "3"]
    done = subprocess.run([*cmd, "--fps", "20", "--boxes", "3"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["cameras_rate"] == 80.0 and result["boxes_per_frame"] == 3
    assert 0.8 * 80 <= result["frames_per_s"] <= 1.2 * 80, result  # paced cameras, none lost
    assert result["cpu_us_per_frame"] > 0 and 0 < result["cores_used"] < 2.5, result


def test_real_cameras_compare_both_ways_of_sending(h264_video: Path) -> None:
    """Real RTSP cameras from the loopback server, each way of sending in its own process: both deliver the
    cameras' frames, and the ratio between them is printed."""
    cmd = [sys.executable, str(REPO / "bench" / "bench_overhead.py"), "--rtsp", str(h264_video), "--cameras", "3"]
    cmd += ["--seconds", "3", "--fps", "20", "--sends", "kept,pyzmq"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [run["sends"] for run in result["runs"]] == ["kept", "pyzmq"]
    for run in result["runs"]:
        assert 0.7 * 60 <= run["frames_per_s"] <= 1.3 * 60, run  # three cameras at 20 fps, decoded and published
        assert run["captured_per_s"] >= run["frames_per_s"] * 0.9 and run["publish_ms_per_frame"] > 0, run
        assert run["cameras_never_connected"] == 0, run
    assert result["kept_over_pyzmq"] == round(result["runs"][0]["frames_per_s"] / result["runs"][1]["frames_per_s"], 2)


def test_comparing_sends_without_real_cameras_is_refused() -> None:
    cmd = [sys.executable, str(REPO / "bench" / "bench_overhead.py"), "--sends", "kept,pyzmq"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0 and "needs --rtsp" in done.stderr and "Traceback" not in done.stderr
