"""The frame-lease probe runs both hand-overs on the CPU and reports each; without a GPU, CUDA is one line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "bench" / "probe_frame_lease.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_probe_reports_both_hand_overs(tmp_path: Path) -> None:
    done = probe("--device", "cpu", "--calls", "20", "--out", str(tmp_path / "probe.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert json.loads((tmp_path / "probe.json").read_text()) == document
    assert set(document["ways"]) == {"view each frame", "slot view kept"}
    for way in document["ways"].values():
        assert way["make_us"] > 0 and way["drop_us"] > 0 and way["lock_turns"] >= 0, way


def test_cuda_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU")
    spec = importlib.util.spec_from_file_location("probe_frame_lease", REPO / "bench" / "probe_frame_lease.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a CUDA GPU" in err
