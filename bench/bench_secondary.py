"""What secondary models cost per crop: Ultralytics classification, RapidOCR text reading and face embeddings.

    python bench/bench_secondary.py [--crops 50] [--classifier yolo11n-cls.yaml] [--device cpu|auto]

Prints one JSON document with milliseconds per crop for each model (after a warm-up), on rendered plate crops
(OCR), 160x100 vehicle-sized crops (classification) and 120x120 face-sized crops (InceptionResnetV1 embeddings,
seeded weights: the compute of the trained network). A ``-cls.yaml`` architecture has the compute of the trained
model. ``--device auto`` runs the classifier and the embedder on the GPU when there is one (OCR stays on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import cv2
import numpy as np


def plate(text: str) -> np.ndarray:
    image = np.full((72, 264, 3), 235, np.uint8)
    cv2.putText(image, text, (24, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (20, 20, 20), 3)
    return image


def per_crop_ms(run: object, crops: list[np.ndarray], batch: int) -> float:
    fn = run.run  # type: ignore[attr-defined]
    fn(crops[:batch])  # warm up
    started = time.perf_counter()
    for i in range(0, len(crops), batch):
        fn(crops[i : i + batch])
    return round(1000.0 * (time.perf_counter() - started) / len(crops), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=50)
    parser.add_argument("--classifier", default="yolo11n-cls.yaml")
    parser.add_argument("--device", choices=["cpu", "auto"], default="cpu")
    args = parser.parse_args()
    import torch

    from pipeline.config import SecondaryConfig
    from pipeline.secondary import CropClassifier, CropEmbedder, CropReader

    rng = np.random.default_rng(0)
    vehicles = [rng.integers(0, 255, (100, 160, 3), dtype=np.uint8) for _ in range(args.crops)]
    plates = [plate(f"KX {1000 + i}") for i in range(args.crops)]
    faces = [rng.integers(0, 255, (120, 120, 3), dtype=np.uint8) for _ in range(args.crops)]
    classifier = CropClassifier(args.classifier, 224, 3, args.device)
    embed = SecondaryConfig(kind="embed", model="seeded:0", classes=["face"], match=False, embedding=True)
    embedder = CropEmbedder(embed, args.device)
    gpu = args.device == "auto" and torch.cuda.is_available()
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if gpu else None,
        },
        "classify_ms_per_crop_batch1": per_crop_ms(classifier, vehicles, 1),
        "classify_ms_per_crop_batch8": per_crop_ms(classifier, vehicles, 8),
        "ocr_single_line_ms_per_crop": per_crop_ms(CropReader("single"), plates, 1),
        "ocr_multi_line_ms_per_crop": per_crop_ms(CropReader("multi"), plates, 1),
        "face_embed_ms_per_crop_batch1": per_crop_ms(embedder, faces, 1),
        "face_embed_ms_per_crop_batch8": per_crop_ms(embedder, faces, 8),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
