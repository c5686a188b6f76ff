"""``edgesight synth``: write a generated scene as ``scene.mp4`` plus ``truth.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from pipeline.errors import EdgesightError
from pipeline.synth.scene import StreetScene


def write_scene(
    out: Path,
    seed: int,
    frames: int,
    width: int = 640,
    height: int = 360,
    fps: float = 30.0,
    occlusion: bool = True,
) -> Path:
    """Render ``frames`` frames to ``out/scene.mp4`` and their truth to ``out/truth.jsonl``; returns ``out``."""
    if frames < 1:
        raise EdgesightError(f"--frames must be at least 1, got {frames}")
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise EdgesightError(f"--size must be at least 64x64 with even sides, got {width}x{height}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesightError(f"cannot create output folder '{out}': {exc.strerror}") from exc
    scene = StreetScene(seed, frames, width, height, fps, occlusion)
    video_path = out / "scene.mp4"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise EdgesightError(f"cannot write video '{video_path}'")
    try:
        with (out / "truth.jsonl").open("w", encoding="utf-8") as truth:
            for index in range(frames):
                frame = scene.render(index)
                writer.write(frame.image)
                truth.write(json.dumps(frame.truth_json(), separators=(",", ":")) + "\n")
    finally:
        writer.release()
    return out
