"""The command line as a user meets it: bad input, the quick form, check, subscribe, signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import free_port

from pipeline.schema import DetectionsMessage, StatusMessage
from pipeline.subscriber import Subscriber

EDGESIGHT = [sys.executable, "-m", "pipeline.cli"]
REPO = Path(__file__).parent.parent


def edgesight(*args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGESIGHT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, f"expected one line (besides progress logs), got:\n{result.stderr}"
    assert lines[0].startswith("edgesight: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {
        "random": d / "random.mp4",
        "empty": d / "empty.mp4",
        "text": d / "notes.txt",
        "badmodel": d / "bad.pt",
        "emptydir": d / "nothing",
    }
    files["random"].write_bytes(np.random.default_rng(0).bytes(20000))  # seeded: rare random bytes do decode
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a video\n")
    files["badmodel"].write_text("not a model\n")
    files["emptydir"].mkdir()
    return files


@pytest.fixture(scope="module")
def obb_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("obb") / "obb.pt"
    YOLO("yolo11n-obb.yaml").save(str(path))
    return path


@pytest.mark.parametrize(
    ("source_key", "needles"),
    [
        ("missing", ["video file not found", "missing.mp4"]),
        ("random", ["cannot open video file", "random.mp4"]),
        ("empty", ["empty (0 bytes)", "empty.mp4"]),
        ("text", ["cannot open video file", "notes.txt"]),
        ("emptydir", ["no images in folder", "nothing"]),
    ],
)
def test_bad_sources(
    source_key: str, needles: list[str], bad_files: dict[str, Path], arch_weights: Path, tmp_path: Path
) -> None:
    source = {"missing": str(tmp_path / "missing.mp4")}.get(source_key) or str(bad_files[source_key])
    t0 = time.monotonic()
    result = edgesight("run", "--source", source, "--model", str(arch_weights), "--publish", "tcp://127.0.0.1:0")
    assert time.monotonic() - t0 < 20
    assert_one_line_error(result, *needles)


def test_bad_models(bad_files: dict[str, Path], obb_weights: Path, tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "nope.pt"): ["model file not found", "nope.pt"],
        str(bad_files["badmodel"]): ["not a valid Ultralytics .pt file", "bad.pt"],
        str(obb_weights): ["'obb' model", "obb.pt", "runs detect, segment, pose models"],
        "yolo11n.pt": ["could not be downloaded", "--model /path/to/yolo11n.pt"],
        "missing.pt": ["model file not found", "'missing.pt'", "no bundled model or Ultralytics asset"],
        "missing.yaml": ["model architecture not found", "'missing.yaml'"],
    }

    def run(model: str) -> subprocess.CompletedProcess[str]:
        return edgesight(
            "run", "--source", "synthetic://?frames=2", "--model", model, "--publish", "tcp://127.0.0.1:0", cwd=tmp_path
        )

    with ThreadPoolExecutor(2) as pool:  # two at a time: each run is mostly its imports, one core's worth
        results = dict(zip(cases, pool.map(run, cases), strict=True))
    for model, needles in cases.items():
        result = results[model]
        assert_one_line_error(result, *needles)
        if model.startswith("missing"):
            assert "GitHub" not in result.stdout + result.stderr, "a name Ultralytics lacks is never looked up"
    assert not (tmp_path / "yolo11n.pt").exists(), "a failed download must not leave a file behind"


def test_bad_configs(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("streams:\n  - id: a\n    source: a.mp4\nmodel: {path: x.pt, cnf: 0.3}\n")
    assert_one_line_error(edgesight("check", str(bad_key)), "bad.yaml", "model.cnf: unknown key")
    assert_one_line_error(edgesight("run", str(bad_key)), "bad.yaml", "model.cnf: unknown key")
    wrong_type = tmp_path / "type.yaml"
    wrong_type.write_text("streams:\n  - {id: a, source: a.mp4, queue_size: many}\n")
    assert_one_line_error(edgesight("check", str(wrong_type)), "type.yaml", "streams[0].queue_size")
    assert_one_line_error(edgesight("check", str(tmp_path / "absent.yaml")), "config file not found", "absent.yaml")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = edgesight("run", "--source", str(tmp_path / "missing.mp4"), "--model", "x.pt", "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "video file not found" in result.stderr


def test_check_accepts_the_examples() -> None:
    """Their files and ports are those of the boxes they describe: only their keys and values are checked here."""
    for config in sorted((REPO / "configs").glob("*.yaml")):
        result = edgesight("check", "--schema-only", str(config))
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


def test_check_names_each_file_model_gallery_and_port_that_run_would_refuse(
    bad_files: dict[str, Path], tiny_video: Path, tmp_path: Path
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    embedder = tmp_path / "embedder.onnx"
    embedder.write_bytes(b"only its presence is checked")
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
streams:
  - {{id: missing, source: {{type: file, path: {tmp_path / "gone.mp4"}}}}}
  - {{id: empty, source: {bad_files["empty"]}}}
  - {{id: text, source: {{type: file, path: {bad_files["text"]}}}}}
  - {{id: folder, source: {{type: images, path: {bad_files["emptydir"]}}}}}
  - {{id: good, source: {{type: file, path: {tiny_video}}}}}
  - {{id: camera, source: "rtsp://127.0.0.1:1/live"}}
model: {{path: {tmp_path / "models/custom.pt"}}}
faces: {{detector: mtcnn, recognize: true, gallery: {tmp_path / "faces.db"}, weights: {embedder}}}
publish: {{endpoint: "{endpoint}"}}
control: {{endpoint: "{endpoint}"}}
metrics: {{port: {busy_port}}}
"""
    )
    try:
        result = edgesight("check", str(config))
    finally:
        busy.close()
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr and "OK" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("edgesight: error: ")]
    expected = [
        ("streams[0].source", "video file not found", "gone.mp4"),
        ("streams[1].source", "empty (0 bytes)", "empty.mp4"),
        ("streams[2].source", "cannot open video file", "notes.txt"),
        ("streams[3].source", "no images in folder", "nothing"),
        ("model.path", "model file not found", "custom.pt"),
        ("faces.gallery", "face gallery not found", "faces.db"),
        ("control.endpoint", "cannot bind", endpoint),
        ("metrics.port", "cannot serve metrics", str(busy_port)),
    ]
    assert len(lines) == len(expected), result.stderr
    for line, needles in zip(lines, expected, strict=True):
        assert line.startswith(f"edgesight: error: {config}: {needles[0]}: ")
        assert all(needle in line for needle in needles[1:]), line

    schema_only = edgesight("check", "--schema-only", str(config))
    assert schema_only.returncode == 0 and "OK" in schema_only.stdout, schema_only.stderr


def test_check_passes_what_run_can_start_and_leaves_its_ports_free(tiny_video: Path, tmp_path: Path) -> None:
    publish, metrics = free_port(), free_port()
    config = tmp_path / "good.yaml"
    config.write_text(
        f"streams:\n  - {{id: a, source: {tiny_video}}}\nmodel: {{path: edgesight-det}}\n"
        f"publish: {{endpoint: 'tcp://127.0.0.1:{publish}'}}\nmetrics: {{port: {metrics}}}\n"
    )
    result = edgesight("check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: OK")
    for port in (publish, metrics):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # released when check ended


def collect(endpoint: str, until_events: set[str], out: list[object], timeout_s: float) -> None:
    with Subscriber(endpoint) as sub:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = sub.recv(0.2)
            if msg is None:
                continue
            out.append(msg)
            if isinstance(msg, StatusMessage) and msg.event in until_events:
                return


def test_quick_form_delivers_every_frame_then_eos(arch_weights: Path, people1: Path, endpoint: str) -> None:
    """The foundation issue's acceptance run, with an independent subscriber."""
    got: list[object] = []
    listener = threading.Thread(target=collect, args=(endpoint, {"eos", "error"}, got, 120))
    listener.start()
    result = edgesight(
        "run",
        "--source",
        str(people1),
        "--model",
        str(arch_weights),
        "--publish",
        endpoint,
        "--max-frames",
        "200",
        "--imgsz",
        "320",
        timeout=120,
    )
    listener.join(5)
    assert result.returncode == 0, result.stderr
    dets = [m for m in got if isinstance(m, DetectionsMessage)]
    assert [m.seq for m in dets] == list(range(200))
    assert isinstance(got[-1], StatusMessage) and got[-1].event == "eos"


def test_sigint_and_sigterm_stop_within_two_seconds(arch_weights: Path, endpoint: str) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        got: list[object] = []
        listener = threading.Thread(target=collect, args=(endpoint, {"stopped", "eos"}, got, 60))
        listener.start()
        proc = subprocess.Popen(
            [
                *EDGESIGHT,
                "run",
                "--source",
                "synthetic://?frames=100000",
                "--model",
                str(arch_weights),
                "--imgsz",
                "320",
                "--publish",
                endpoint,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any(isinstance(m, DetectionsMessage) for m in got) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(isinstance(m, DetectionsMessage) for m in got), "pipeline never published"
        t0 = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(10)
        elapsed = time.monotonic() - t0
        listener.join(5)
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        assert elapsed < 2.0, f"{sig.name}: took {elapsed:.2f} s"
        assert isinstance(got[-1], StatusMessage) and got[-1].event == "stopped"
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_subscribe_command_prints_messages(arch_weights: Path, endpoint: str) -> None:
    sub = subprocess.Popen(
        [*EDGESIGHT, "subscribe", "--endpoint", endpoint, "--topic", "detections.", "--count", "5", "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    run = edgesight(
        "run",
        "--source",
        "synthetic://?frames=40&width=320&height=192",
        "--model",
        str(arch_weights),
        "--imgsz",
        "320",
        "--publish",
        endpoint,
        "--wait-for-subscriber",
    )
    out, err = sub.communicate(timeout=30)
    assert run.returncode == 0, run.stderr
    assert sub.returncode == 0, err
    bodies = [json.loads(line) for line in out.splitlines()]
    assert [b["seq"] for b in bodies] == [0, 1, 2, 3, 4]
    assert all(b["schema"] == "edgesight.detections/1" for b in bodies)


def test_subscribe_times_out_with_a_clear_error(endpoint: str) -> None:
    result = edgesight("subscribe", "--endpoint", endpoint, "--timeout", "0.5")
    assert_one_line_error(result, "no message on", code=1)


def test_demo_runs_offline_with_the_bundled_model(endpoint: str, tmp_path: Path) -> None:
    got: list[object] = []
    listener = threading.Thread(target=collect, args=(endpoint, {"eos"}, got, 120))
    listener.start()
    result = edgesight("demo", "--frames", "100", "--publish", endpoint, timeout=120, cwd=tmp_path)
    listener.join(5)
    assert result.returncode == 0, result.stderr
    assert "frames" in result.stderr and "fps" in result.stderr  # the live view
    dets = [m for m in got if isinstance(m, DetectionsMessage)]
    assert [m.seq for m in dets] == list(range(100))
    assert sum(1 for m in dets if m.detections) >= 80, "most frames should have detections"
    assert {d.label for m in dets for d in m.detections} <= {"person", "bicycle", "car"}
    video = cv2.VideoCapture(str(tmp_path / "edgesight-demo.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 100
    with av.open(str(tmp_path / "edgesight-demo.mp4")) as saved:
        assert saved.streams.video[0].codec_context.name == "h264", "H.264, which browsers play"


def test_version_is_the_installed_distribution_s(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import re

    import pipeline
    from pipeline.cli import edgesight_version

    result = edgesight("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"edgesight {importlib.metadata.version('edgesight')}\n"
    found = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert found
    declared = found.group(1)
    assert pipeline.__version__ == declared, "the package's version follows pyproject.toml's"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # a checkout used without installing it
    assert edgesight_version() == declared


def test_help_names_the_model_each_command_uses_by_default() -> None:
    from pipeline.cli import build_parser

    assert build_parser().parse_args(["demo"]).model == "edgesight-det"
    for command, default in (("demo", "edgesight-det"), ("run", "yolo11n.pt")):
        result = edgesight(command, "--help")
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())  # argparse wraps its help
        assert f"(default {default})" in text
        assert "the default" not in text


def test_without_a_model_offline_the_bundled_detector_steps_in(tmp_path: Path) -> None:
    result = edgesight(
        "run", "--source", "synthetic://?frames=3", "--publish", "tcp://127.0.0.1:0", timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "using the bundled 'edgesight-det' instead" in result.stderr
    assert "could not be downloaded" in result.stderr
    assert not (tmp_path / "yolo11n.pt").exists()


def test_engines_that_cannot_run_here_are_one_line_errors(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        result = edgesight(
            "run",
            "--source",
            "synthetic://?frames=2",
            "--engine",
            "tensorrt",
            "--model",
            "edgesight-det",
            "--publish",
            f"tcp://127.0.0.1:{free_port()}",
        )
        assert_one_line_error(result, "engine 'tensorrt' cannot run here", "tensorrt")
        result = edgesight("build-engine", "edgesight-det", "--cache-dir", str(tmp_path))
        assert_one_line_error(result, "tensorrt is not installed")
    result = edgesight("build-engine", "edgesight-det", "--precision", "int8")
    assert_one_line_error(result, "int8 needs model.calibration")
    config = tmp_path / "nvdec.yaml"
    video = tmp_path / "missing.mp4"
    config.write_text(
        f"streams:\n  - id: a\n    source: {{type: file, path: {video}, decoder: nvdec}}\n"
        f"publish: {{endpoint: 'tcp://127.0.0.1:{free_port()}'}}\n"
    )
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        assert_one_line_error(edgesight("run", str(config)), "missing.mp4")
