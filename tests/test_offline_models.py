"""The project's own models: found by name, and accurate on scenes from seeds never used in training."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import config_for, run_and_collect

from engines.weights import BUNDLED_DIR, resolve_weights
from pipeline.synth.scoring import score_frames
from pipeline.synth.writer import write_scene

UNSEEN_SEED = 4242  # training used 1000-1059, validation 9000-9007


def test_bundled_models_resolve_by_name() -> None:
    for name in ("edgesight-det", "edgesight-seg"):
        path = resolve_weights(name)
        assert path.parent == BUNDLED_DIR and path.stat().st_size > 1_000_000
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["box_map50"] >= 0.95


def test_the_segmenter_loads_as_a_segmentation_model() -> None:
    from engines.weights import load_detection_module

    loaded = load_detection_module("edgesight-seg")
    assert loaded.task == "segment" and loaded.name == "edgesight-seg.pt"
    assert load_detection_module("edgesight-det").task == "detect"


def test_detector_recall_and_precision_on_an_unseen_scene(tmp_path: Path, endpoint: str) -> None:
    scene = write_scene(tmp_path / "scene", UNSEEN_SEED, 150)
    truth = [json.loads(line) for line in (scene / "truth.jsonl").read_text().splitlines()]
    config = config_for(endpoint, [{"id": "s", "source": str(scene / "scene.mp4")}], {"path": "edgesight-det"})
    got = run_and_collect(config)
    found = {m.frame_index: [(d.label, d.box) for d in m.detections] for m in got.detections("s")}
    assert len(found) == 150
    score = score_frames(truth, found)
    print(f"seed {UNSEEN_SEED}: recall {score.recall:.4f} precision {score.precision:.4f} {score}")
    assert score.true_positives > 600
    assert score.recall >= 0.95
    assert score.precision >= 0.95


def test_scoring_ignores_mostly_hidden_objects() -> None:
    frame = {
        "frame_index": 0,
        "objects": [
            {"label": "car", "box": [0, 0, 100, 50], "visible": 1.0},
            {"label": "person", "box": [200, 0, 220, 60], "visible": 0.2},
            {"label": "person", "box": [300, 0, 320, 60], "visible": 0.9},
        ],
    }
    dets = {0: [("car", [2, 1, 100, 50]), ("person", [201, 0, 221, 60]), ("bicycle", [400, 0, 450, 40])]}
    score = score_frames([frame], dets)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 1, 1)
    wrong_label = score_frames([frame], {0: [("person", [0, 0, 100, 50])]})
    assert (wrong_label.true_positives, wrong_label.false_positives) == (0, 1)
