"""The terminal view and JSON logs of ``edgesight run``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import free_port
from test_sources import FakeEngine

from pipeline.config import build_config
from pipeline.console import LiveView, progress_bar
from pipeline.runner import Pipeline


def test_progress_bar() -> None:
    assert progress_bar(0, 200) == "[....................]   0% 0/200"
    assert progress_bar(100, 200) == "[##########..........]  50% 100/200"
    assert progress_bar(250, 200).startswith("[####################] 100%")
    assert progress_bar(5, None) == "live"


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_pipeline(*streams: dict[str, Any]) -> Pipeline:
    """A pipeline of ``streams`` with a scripted engine, tracking off, publishing on a free port."""
    config = build_config(
        {
            "streams": list(streams),
            "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
            "tracking": {"enabled": False},
        },
        "t",
    )
    return Pipeline(config, engine_factory=lambda _s, _n: FakeEngine())


def test_the_live_table_shows_each_stream_and_redraws_in_place(tiny_video: Path) -> None:
    pipeline = fake_pipeline(
        {"id": "file", "source": {"type": "file", "path": str(tiny_video), "realtime": True}},
        {"id": "door-camera", "source": "rtsp://127.0.0.1:1/live", "reconnect": {"base_s": 5}},
    )
    pipeline.start()
    try:
        out = TtyBuffer()
        view = LiveView(pipeline, out)
        view.draw()
        time.sleep(1.0)
        view.draw()
    finally:
        pipeline.stop()
        pipeline.close()
    text = out.getvalue()
    assert "\x1b[3F\x1b[J" in text, "the second draw moves back over the three lines of the first"
    last = text.split("\x1b[J")[-1].splitlines()
    assert last[0].split() == ["stream", "state", "frames/s", "latency", "drops", "progress"]
    file_row = next(line for line in last if line.startswith("file "))
    fps = float(file_row.split()[2])
    assert 10.0 <= fps <= 30.0, file_row  # the file is paced at 20 fps
    assert "/40" in file_row and "%" in file_row
    camera_row = next(line for line in last if line.startswith("door-camera"))
    assert camera_row.split()[1] in ("connecting", "reconnecting") and camera_row.endswith("live")


def test_progress_counts_to_what_the_stream_will_take(tiny_video: Path) -> None:
    """A 40-frame file with max_frames 10 is done at 10/10; with max_frames 100 its 40 frames are the whole."""
    pipeline = fake_pipeline(
        {"id": "capped", "source": str(tiny_video), "max_frames": 10},
        {"id": "whole", "source": str(tiny_video), "max_frames": 100},
    )
    pipeline.start()
    try:
        assert pipeline.wait(30)
        progress = {row["stream"]: row["progress"] for row in LiveView(pipeline, io.StringIO()).rows()}
    finally:
        pipeline.stop()
        pipeline.close()
    assert progress == {"capped": "[####################] 100% 10/10", "whole": "[####################] 100% 40/40"}


def test_json_logs_for_services(arch_weights: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            "--source",
            "synthetic://?frames=5&width=96&height=64",
            "--model",
            str(arch_weights),
            "--imgsz",
            "96",
            "--publish",
            f"tcp://127.0.0.1:{free_port()}",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["level"] == "info" and r["message"].startswith("engine:") for r in records)
    assert any("5 frames published" in r["message"] for r in records)
