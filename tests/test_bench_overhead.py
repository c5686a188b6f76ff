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
