"""Motion gating: still frames skip the model, busy ones do not, and what is published says which is which."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
from helpers import config_for, run_and_collect

from pipeline.config import MotionConfig
from pipeline.motion import MotionGate
from pipeline.synth.writer import write_scene


def still_and_busy_clip(tmp: Path, still: int = 60, busy: int = 60) -> Path:
    """``still`` copies of one frame, ``busy`` frames of a moving street, ``still`` copies again (30 fps)."""
    scene = write_scene(tmp / "scene", 4242, 60 + busy)
    cap = cv2.VideoCapture(str(scene / "scene.mp4"))
    frames = [cap.read()[1] for _ in range(60 + busy)]
    path = tmp / "still_busy.mp4"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for frame in [frames[59]] * still + frames[60:] + [frames[-1]] * still:
        writer.write(frame)
    writer.release()
    return path


def test_the_gate_passes_motion_and_keeps_still_noisy_frames_out() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (180, 320, 3), dtype=np.uint8)
    gate = MotionGate(MotionConfig(keepalive_s=1.0))
    assert gate.moving(base, 0.0), "the first frame always goes to the model"
    noisy = [np.clip(base.astype(int) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8) for _ in range(5)]
    assert not any(gate.moving(f, 33.0 * (i + 1)) for i, f in enumerate(noisy)), "sensor noise is not motion"
    moved = base.copy()
    moved[50:80, 100:140] = 255  # an object appears
    assert gate.moving(moved, 200.0)
    assert not gate.moving(moved, 233.0)
    assert gate.moving(moved, 1300.0), "a still scene still gets the model every keepalive_s"
    assert (gate.frames, gate.gated) == (9, 6)


def test_a_clip_with_still_and_busy_parts_skips_the_model_on_the_still_ones(tmp_path: Path, endpoint: str) -> None:
    clip = still_and_busy_clip(tmp_path)
    stream = {"id": "lot", "source": str(clip), "motion": {"keepalive_s": 1.0}}
    got = run_and_collect(config_for(endpoint, [stream], {"path": "edgesight-det"}, tracking={"enabled": False}))
    msgs = got.detections("lot")
    assert [m.frame_index for m in msgs] == list(range(180))
    reused = [m.raw.get("reused", False) for m in msgs]
    computed = reused.count(False)
    print(
        f"model ran on {computed} of 180 frames ({reused[:60].count(False)} still, "
        f"{reused[60:120].count(False)} busy, {reused[120:].count(False)} still)"
    )
    # Against the last frame the model saw, slow walkers need a frame or two to move enough: about every other
    # busy frame goes to the model, and the ones in between carry boxes at most a couple of pixels old.
    assert reused[60:120].count(False) >= 25, "the busy part goes to the model"
    assert reused[:60].count(False) <= 4 and reused[120:].count(False) <= 4, "still parts: first frame + keepalives"
    for prev, msg in itertools.pairwise(msgs):
        if msg.raw.get("reused"):
            assert [d.box for d in msg.detections] == [d.box for d in prev.detections], "the last detections again"
    assert got.report is not None and got.report.ok

    skip = {"id": "lot", "source": str(clip), "motion": {"keepalive_s": 1.0, "on_still": "skip"}}
    skipped = run_and_collect(config_for(endpoint, [skip], {"path": "edgesight-det"}, tracking={"enabled": False}))
    kept = skipped.detections("lot")
    assert abs(len(kept) - computed) <= 3 and not any(m.raw.get("reused") for m in kept)
    assert [m.seq for m in kept] == list(range(len(kept))), "seq stays contiguous: nothing was lost, just not sent"
