"""What faces cost: the main model alone, with a face detector at its own rate, with recognition, and the
face detector as the main model on every frame (the peer: faces in series with nothing else).

    python bench/bench_faces.py --video people1.mp4 [--frames 240] [--every 5] [--model edgesight-det]

Every configuration runs in this process on the same file, decoded as fast as the pipeline takes frames.
Prints one JSON document: main-model frames/s, face frames/s, the face thread's ms per frame, and ratios
against the main model alone. Recognition uses seeded InceptionResnetV1 weights: the compute of the VGGFace2
model, not its accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import tempfile
from pathlib import Path
from typing import Any


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def run(
    video: Path, frames: int, model: str, device: str, faces: dict[str, Any] | None, realtime: bool = False
) -> dict[str, Any]:
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    config = build_config(
        {
            "streams": [
                {"id": "s", "source": {"type": "file", "path": str(video), "realtime": realtime}, "max_frames": frames}
            ],
            "model": {"path": model, "device": device},
            "publish": {"endpoint": _endpoint()},
            **({"faces": faces} if faces else {}),
        },
        "bench",
    )
    report = Pipeline(config).run()
    out = {
        "main_fps": round(report.frames_published / report.elapsed_s, 2),
        "stage_ms": report.stage_ms,
        "latency_ms": report.latency_ms,
        "engine": f"{report.engine.backend} {report.engine.device} {report.engine.precision}",
    }
    if faces:
        out["face_frames"] = report.face_frames
        out["face_fps"] = round(report.face_frames / report.elapsed_s, 2)
    return out


def enrolled_gallery(video: Path, folder: Path, weights: str, device: str) -> Path:
    """A gallery with one person: the largest face of the video's first frame."""
    import cv2

    from pipeline.faces.embedder import load_embedder
    from pipeline.faces.enroll import enroll
    from pipeline.faces.gallery import FaceGallery

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    if not ok:
        raise SystemExit(f"cannot read {video}")
    photo = folder / "someone.png"
    cv2.imwrite(str(photo), frame)
    gallery = FaceGallery(folder / "faces.db")
    enroll(gallery, "someone", [photo], load_embedder(weights, device), device)
    gallery.close()
    return folder / "faces.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--every", type=int, default=5, help="faces.every_n_frames")
    parser.add_argument("--model", default="edgesight-det", help="the main model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--realtime", action="store_true", help="pace the file at its own fps, as a live camera")
    args = parser.parse_args()
    import torch

    from pipeline.cli import configure_threads

    configure_threads()
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    weights = "seeded:0"
    with tempfile.TemporaryDirectory() as tmp:
        gallery = enrolled_gallery(args.video, Path(tmp), weights, device)
        run(args.video, 24, args.model, args.device, None)  # warm caches (decoder, model files)
        rt = args.realtime
        face_cfg: dict[str, Any] = {"detector": "mtcnn", "every_n_frames": args.every}
        recognition = {**face_cfg, "recognize": True, "gallery": str(gallery), "weights": weights, "threshold": 0.5}
        alone = run(args.video, args.frames, args.model, args.device, None, rt)
        own_rate = run(args.video, args.frames, args.model, args.device, face_cfg, rt)
        recognize = run(args.video, args.frames, args.model, args.device, recognition, rt)
        in_series = run(args.video, args.frames, "mtcnn", args.device, None, rt)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": __import__("os").cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "video": args.video.name,
        "frames": args.frames,
        "realtime": args.realtime,
        "every_n_frames": args.every,
        "main_model": args.model,
        "main_alone": alone,
        "faces_at_own_rate": own_rate,
        "faces_with_recognition": recognize,
        "mtcnn_every_frame_as_main_model": in_series,
        "main_fps_kept_with_faces": round(own_rate["main_fps"] / alone["main_fps"], 3),
        "main_fps_kept_with_recognition": round(recognize["main_fps"] / alone["main_fps"], 3),
        "faces_own_rate_vs_every_frame_fps": round(own_rate["main_fps"] / in_series["main_fps"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
