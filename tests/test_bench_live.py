"""bench/bench_live.py on the CPU: a small sweep of paced, looped cameras, measured by a real subscriber."""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def bench_live(video: Path, weights: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run the benchmark on ``video`` with ``weights`` at 160 px; its JSON document and everything it printed."""
    cmd = [sys.executable, str(REPO / "bench" / "bench_live.py"), "--video", str(video), "--model", str(weights)]
    done = subprocess.run([*cmd, "--imgsz", "160", *args], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stdout + done.stderr


def test_a_small_live_sweep_reports_every_camera_and_a_verdict(arch_weights: Path, tiny_video: Path) -> None:
    args = ("--streams", "1,2", "--all", "--warmup", "6", "--window", "5", "--max-det", "7", "--overload", "1.5")
    args += ("--batch-size", "1")
    document, _ = bench_live(tiny_video, arch_weights, *args)
    assert document["source_fps"] == 20.0
    assert [r["streams"] for r in document["runs"]] == [1, 2]
    for run in document["runs"]:
        assert not run.get("error"), run
        assert set(run["cameras"]) == {f"cam{i}" for i in range(run["streams"])}
        assert run["cpu_cores_used"] > 0.05
        assert run["mean_batch"] == 1.0, "--batch-size reaches the model's config"
        startup = run["startup"]
        assert 0 < startup["sources_opened_s"] <= startup["engine_ready_s"], startup
        assert startup["engine"].startswith("model loaded in")
        pauses = run["pauses"]  # no CUDA graph on the CPU; in a steady state, no collection is due either
        assert pauses["graph_captures_at_s"] == [] and (pauses["gc_longest_at_s"] or 6) >= 6
        for camera in run["cameras"].values():
            assert 0 < camera["fps"] <= 20.0 * 1.15, camera  # paced: never faster than the source
            assert camera["first_publish_s"] is not None
            latency = camera["latency_ms"]
            assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
            assert camera["delivered"] > 0 and camera["captured"] >= camera["delivered"] - 3  # window edges
            assert 0 < camera["boxes_per_message"] <= 7, "random weights find boxes everywhere, up to --max-det"
            assert all(n >= 0 for n in camera["dropped"].values()) and camera["bus_lost"] == 0
            assert isinstance(camera["fell_behind_camera_s"], float), camera
        ages = run["frame_age_ms"]  # the window's frames only, at each hand-off, older at each
        assert list(ages) == ["preprocess", "batched", "inferred", "published"], ages
        delivered = sum(camera["delivered"] for camera in run["cameras"].values())
        assert abs(ages["published"]["frames"] - delivered) <= 3 * run["streams"], (ages, delivered)
        p50s = [hop["p50"] for hop in ages.values()]
        assert p50s == sorted(p50s), ages
        verdict = run["verdict"]
        assert verdict["holds"] is False, "a 5 s window cannot show that cameras hold"
        assert verdict["min_rate_share"] <= verdict["max_rate_share"]
    assert document["largest_holding"] is None
    overload = document["overload"]  # nothing held, so there is no capacity to go past, and no run past it
    assert overload["factor"] == 1.5 and overload["of"] is None and "no number of cameras held" in overload["skipped"]


def test_the_cameras_can_be_real_rtsp_streams_with_a_password(arch_weights: Path, h264_video: Path) -> None:
    document, printed = bench_live(
        h264_video, arch_weights, "--streams", "2", "--rtsp", "--warmup", "6", "--window", "4"
    )
    assert document["cameras"] == "rtsp" and document["rtsp_server_processes"] == 1
    (run,) = document["runs"]
    assert not run.get("error"), run
    assert all(camera["fps"] > 5 and camera["bus_lost"] == 0 for camera in run["cameras"].values()), run
    assert "s3cret" not in printed


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_live", REPO / "bench" / "bench_live.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_a_stream_read_slower_than_its_camera_is_seen_falling_behind_it() -> None:
    """The capture→publish latency of a reader that keeps up with 60% of a 24 fps camera (its backlog piling up in
    the camera) stays low; how far behind the camera's clock its frames are published grows 0.67 s a second."""
    bench = load_bench()
    rng = np.random.default_rng(1)
    published = np.arange(0, 40, 1 / 14.4)  # 14.4 frames a second published, for 40 s
    pts_ms = np.arange(len(published)) * 1000 / 24  # every frame of the camera, none dropped, at its 24 fps
    lagging = published + 0.03 + rng.uniform(0, 0.02, len(published)) - pts_ms / 1000
    assert bench.fell_behind(list(lagging)) == pytest.approx(32 * (1 - 14.4 / 24), abs=0.2)
    keeping_up = 0.03 + rng.uniform(0, 0.02, 960)  # published 30-50 ms after each of its frames
    assert abs(bench.fell_behind(list(keeping_up))) < 0.02
    assert bench.fell_behind([0.1] * 9) is None, "too few to tell"


def test_the_pause_watch_sees_collections_and_graph_captures() -> None:
    bench = load_bench()
    t0 = time.time()
    with bench.PauseWatch(t0) as watch:
        time.sleep(0.2)
        gc.collect()
        logging.getLogger("engines.torch_backend").debug("captured a CUDA graph for input %s", (8, 3, 384, 640))
    gc.collect()  # after the watch: not counted
    report = watch.report(since=0.1)
    assert report["gc_collections"] >= 1 and report["gc_full"] >= 1
    assert 0.1 <= report["gc_longest_at_s"] < 5 and report["gc_longest_ms"] >= 0
    assert len(report["graph_captures_at_s"]) == 1 and report["graph_captures_at_s"][0] >= 0.2
    assert watch.report(since=60)["gc_collections"] == 0, "only what happened in the window"


def _camera(fps: float, p99: float, fell_behind: float | None = 0.0) -> dict[str, Any]:
    latency = {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99, "max": p99 * 1.5}
    return {
        "fps": fps,
        "latency_ms": latency,
        "first_publish_s": 9.0,
        "longest_gap_ms": 90.0,
        "longest_gap_at_s": 40.0,
        "dropped": {"capture": 100},
        "fell_behind_camera_s": fell_behind,
    }


def test_past_capacity_a_run_degrades_evenly_only_with_low_latency_even_shares_and_no_backlog() -> None:
    """At 24 fps a frame interval is 41.7 ms: three of them are 125 ms."""
    bench = load_bench()

    def verdict(*cameras: dict[str, Any]) -> dict[str, Any]:
        run = {"cameras": {f"cam{i}": c for i, c in enumerate(cameras)}}
        result: dict[str, Any] = bench.verdict(run, 24.0, 60.0)
        return result

    even = verdict(_camera(16.0, 110.0), _camera(16.8, 100.0))
    assert even["degrades_evenly"] and not even["holds"], even
    assert not verdict(_camera(16.0, 140.0), _camera(16.8, 100.0))["degrades_evenly"], "p99 past 3 intervals"
    assert not verdict(_camera(12.0, 100.0), _camera(16.8, 100.0))["degrades_evenly"], "one camera starved"
    assert not verdict(_camera(16.0, 100.0, 2.5), _camera(16.8, 100.0))["degrades_evenly"], "a backlog upstream"
    silent = _camera(0.0, 0.0, None) | {"first_publish_s": None}
    assert not verdict(silent, silent)["degrades_evenly"], "nothing published is no graceful degradation"
    assert verdict(_camera(24.0, 50.0), _camera(24.0, 60.0))["holds"]


def test_the_run_past_capacity_is_the_factor_times_what_held_rounded_up_and_groups_follow_the_cameras() -> None:
    bench = load_bench()
    assert [bench.overload_streams(n, 1.5) for n in (64, 72, 5, 1)] == [96, 108, 8, 2]
    assert bench.overload_streams(10, 1.01) == 11, "always past capacity"
    args = bench.parse_args(["--group-size", "16", "--overload", "1.5"])
    assert [bench.decode_groups(args, n) for n in (64, 72, 96, 108)] == [4, 5, 6, 7]
    assert bench.decode_groups(bench.parse_args(["--decode-groups", "5"]), 108) == 5
    assert bench.decode_groups(bench.parse_args([]), 108) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--overload", "1"], "--overload: a factor past capacity"),
        (["--group-size", "0"], "--group-size: must be at least 1"),
        (["--batch-size", "0"], "--batch-size: must be at least 1"),
        (["--group-size", "16", "--decode-groups", "4"], "not allowed with argument"),
    ],
)
def test_bad_sweep_arguments_are_refused_in_one_line(argv: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_live.py"), *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
