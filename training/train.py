"""Train edgesight's own detector and segmenter on generated street scenes (one command, reproducible).

    python training/train.py --task detect            # GPU scale: edgesight-det
    python training/train.py --task segment           # GPU scale: edgesight-seg
    python training/train.py --task detect --scale cpu --device cpu   # smaller, runs on a CPU

Data: scenes from seeds TRAIN_SEEDS are rendered, encoded to MP4 and decoded again (the pipeline's own
domain), every STRIDE-th frame is kept with its truth as YOLO labels (boxes for detect, outlines for segment).
Seeds VAL_SEEDS (never used for training) make the validation set. Hyper-parameters are pinned below.
The best weights are copied to engines/bundled/edgesight-{det,seg}.pt with a metrics JSON beside them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.synth.scene import LABELS, MIN_VISIBLE_FRACTION  # noqa: E402
from pipeline.synth.writer import write_scene  # noqa: E402

SCALES = {
    # (task, scale): (train seeds, val seeds, frames per scene, keep every Nth frame, epochs)
    ("detect", "gpu"): (range(1000, 1060), range(9000, 9008), 300, 10, 40),
    ("segment", "gpu"): (range(1000, 1040), range(9000, 9008), 300, 10, 30),
    ("detect", "cpu"): (range(1000, 1006), range(9000, 9002), 120, 10, 3),
    ("segment", "cpu"): (range(1000, 1006), range(9000, 9002), 120, 10, 3),
}
HYPER = {
    "imgsz": 640,
    "batch": 32,
    "optimizer": "AdamW",
    "lr0": 0.002,
    "cos_lr": True,
    "warmup_epochs": 2,
    "close_mosaic": 5,
    "mosaic": 1.0,
    "fliplr": 0.5,
    "hsv_v": 0.4,
    "seed": 0,
    "deterministic": True,
    "pretrained": False,
    "plots": False,
    "cache": "ram",
}
ARCH = {"detect": "yolo11n.yaml", "segment": "yolo11n-seg.yaml"}
OUT_NAME = {"detect": "edgesight-det", "segment": "edgesight-seg"}


def _label_line(obj: dict, task: str, w: int, h: int) -> str:
    cls = LABELS.index(obj["label"])
    if task == "segment":
        pts = " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in obj["polygon"])
        return f"{cls} {pts}"
    x1, y1, x2, y2 = obj["box"]
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def _render_seed(job: tuple[Path, Path, Path, int, int, int, str]) -> int:
    """Render one scene to MP4, decode it again and keep every ``stride``-th frame with its labels."""
    tmp, images, labels, seed, frames, stride, task = job
    scene_dir = write_scene(tmp / str(seed), seed, frames)
    truth = [json.loads(line) for line in (scene_dir / "truth.jsonl").read_text().splitlines()]
    cap = cv2.VideoCapture(str(scene_dir / "scene.mp4"))
    count = 0
    for index in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        if index % stride:
            continue
        name = f"s{seed}_f{index:04d}"
        cv2.imwrite(str(images / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        t = truth[index]
        kept = [o for o in t["objects"] if o["visible"] >= MIN_VISIBLE_FRACTION]
        lines = [_label_line(o, task, t["width"], t["height"]) for o in kept]
        (labels / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        count += 1
    cap.release()
    shutil.rmtree(scene_dir)
    return count


def build_split(root: Path, split: str, seeds: range, frames: int, stride: int, task: str) -> int:
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor() as pool:
        jobs = [(Path(tmp), images, labels, seed, frames, stride, task) for seed in seeds]
        return sum(pool.map(_render_seed, jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(ARCH), required=True)
    parser.add_argument("--scale", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--device", default="0", help="'0' for the first GPU, 'cpu' for the CPU")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgesight-train")
    parser.add_argument("--out", type=Path, default=REPO / "engines" / "bundled")
    parser.add_argument("--epochs", type=int, help="override the scale's epochs")
    args = parser.parse_args()

    from ultralytics import YOLO

    train_seeds, val_seeds, frames, stride, epochs = SCALES[(args.task, args.scale)]
    epochs = args.epochs or epochs
    data_root = args.work / f"data-{args.task}-{args.scale}"
    t0 = time.time()
    if not (data_root / "data.yaml").exists():
        n_train = build_split(data_root, "train", train_seeds, frames, stride, args.task)
        n_val = build_split(data_root, "val", val_seeds, frames, stride, args.task)
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(LABELS))
        (data_root / "data.yaml").write_text(
            f"path: {data_root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
        )
        print(f"data: {n_train} train / {n_val} val images in {time.time() - t0:.0f} s", flush=True)
    model = YOLO(ARCH[args.task])
    results = model.train(
        data=str(data_root / "data.yaml"),
        epochs=epochs,
        device=args.device,
        project=str(args.work / "runs"),
        name=f"{args.task}-{args.scale}",
        exist_ok=True,
        workers=8,
        verbose=False,
        **HYPER,
    )
    best = Path(results.save_dir) / "weights" / "best.pt"
    metrics = YOLO(str(best)).val(
        data=str(data_root / "data.yaml"), imgsz=HYPER["imgsz"], device=args.device, plots=False, verbose=False
    )
    summary = {
        "task": args.task,
        "scale": args.scale,
        "epochs": epochs,
        "train_seeds": [train_seeds.start, train_seeds.stop - 1],
        "val_seeds": [val_seeds.start, val_seeds.stop - 1],
        "box_map50": round(float(metrics.box.map50), 4),
        "box_map50_95": round(float(metrics.box.map), 4),
        "hyper": HYPER,
        "train_seconds": round(time.time() - t0),
    }
    if args.task == "segment":
        summary["mask_map50"] = round(float(metrics.seg.map50), 4)
        summary["mask_map50_95"] = round(float(metrics.seg.map), 4)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{OUT_NAME[args.task]}.pt"
    shutil.copyfile(best, target)
    (args.out / f"{OUT_NAME[args.task]}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
