"""bench/bench_clips.py runs, writes a clip in each mode and prints its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_clips.py"


def test_the_clip_benchmark_measures_both_modes(h264_video: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--video", str(h264_video), "--frames", "36"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    own, encoded = report["runs"]
    assert own["mode"] == "camera's packets" and encoded["mode"].startswith("encoded")
    assert own["clip_bytes"] > 0 and encoded["clip_bytes"] > 0, "each mode wrote its clip"
    assert own["clip_s"] > 0 and encoded["clip_s"] > 0
    assert report["decode_cpu_ms_per_frame"] > 0 and report["encoded_over_own_cpu"] > 0
