"""Face recognition: the gallery's logic, the ``faces`` commands, and recognition in a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from helpers import config_for, run_and_collect

from pipeline.analytics.events import Observation
from pipeline.errors import ConfigError, ModelError
from pipeline.faces.gallery import FaceGallery, Match, Matcher
from pipeline.faces.identities import TrackIdentities
from pipeline.schema import EventMessage

facenet = pytest.importorskip(
    "facenet_pytorch", reason="facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.5.3)"
)
SCHEMAS = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas"
WEIGHTS = "seeded:0"  # deterministic, offline; only near-identical images match, which is what these tests use
THRESHOLD = 0.1  # on these photos: alice to her enrolled photos <= 0.06, anyone else >= 0.14


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


# -- the gallery's logic, with hand-made embeddings ------------------------------------------------------------
def test_gallery_enrolls_lists_matches_and_removes(tmp_path: Path) -> None:
    gallery = FaceGallery(tmp_path / "g.db")
    gallery.enroll("alice", "emb-a", np.stack([unit(1, 0, 0), unit(1, 0.1, 0)]), ["a1.jpg", "a2.jpg"])
    gallery.enroll("bob", "emb-a", unit(0, 1, 0)[None], ["b1.jpg"])
    gallery.enroll("alice", "emb-a", unit(1, 0, 0.1)[None], ["a3.jpg"])  # more photos of the same person
    assert [(p.name, p.embeddings) for p in gallery.people()] == [("alice", 3), ("bob", 1)]

    matcher = Matcher.from_gallery(gallery, "emb-a", threshold=0.5)
    got = matcher.match(np.stack([unit(1, 0.05, 0), unit(0.1, 1, 0), unit(0, 0, 1)]))
    assert [m.identity for m in got] == ["alice", "bob", None]
    assert got[0].distance < 0.1 and got[2].nearest in ("alice", "bob") and got[2].distance > 0.5
    strict = Matcher.from_gallery(gallery, "emb-a", threshold=0.01)
    assert strict.match(unit(1, 0.05, 0)[None])[0].identity is None  # the threshold decides

    assert gallery.remove("alice") and not gallery.remove("alice")
    assert [p.name for p in gallery.people()] == ["bob"]
    assert Matcher.from_gallery(gallery, "emb-a", 0.5).match(unit(1, 0, 0)[None])[0].identity is None
    with pytest.raises(ConfigError, match="enrolled with \\['emb-a'\\], not 'emb-b'"):
        Matcher.from_gallery(gallery, "emb-b", 0.5)
    gallery.close()
    assert Matcher([], np.zeros((0, 0)), 1.0).match(unit(1, 0)[None]) == [Match(None, None, float("inf"))]


def test_a_track_is_recognized_once_and_unknown_tracks_keep_an_anonymous_id() -> None:
    tracks = TrackIdentities("door", attempts=3)
    obs = Observation(7, 0, "face", 0.99, (0, 0, 10, 10), 4, 133.0, 1.0)
    assert tracks.update(7, Match(None, "alice", 0.8), obs) is None
    event = tracks.update(7, Match("alice", "alice", 0.2), obs)
    assert event is not None and event.kind == "identity" and event.type == "new"
    assert event.to_json()["identity"] == "alice" and event.to_json()["distance"] == 0.2
    assert not tracks.wants_embedding(7)  # recognized: no more embeddings for this track
    assert tracks.update(7, Match("alice", "alice", 0.1), obs) is None  # one event per track
    for _ in range(3):
        tracks.update(9, Match(None, "bob", 0.9), obs)
    assert not tracks.wants_embedding(9)  # out of attempts: stays unknown
    anon = tracks.face(9).anon_id
    assert anon.startswith("anon-") and tracks.face(9).anon_id == anon != tracks.face(7).anon_id
    assert tracks.face(9).annotation() == {"identity": None, "anon_id": anon}
    jsonschema.validate(event.to_json(), json.loads((SCHEMAS / "event-1.schema.json").read_text()))


# -- photos and a clip cut from real footage ---------------------------------------------------------------------
def face_photos(people1: Path, out: Path) -> dict[str, list[Path]]:
    """Close-up photos of two people (each the region around one face, enlarged), three frames apart each."""
    mtcnn = facenet.MTCNN(keep_all=True, device="cpu")
    cap = cv2.VideoCapture(str(people1))
    frames = []
    for _ in range(9):
        ok, frame = cap.read()
        assert ok
        frames.append(frame)
    boxes, _probs = mtcnn.detect(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB))
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]))  # the two largest faces of the first frame
    photos: dict[str, list[Path]] = {}
    for name, k in (("alice", order[0]), ("bob", order[1])):
        cx, cy = (boxes[k, :2] + boxes[k, 2:]) / 2
        half = 1.6 * max(boxes[k, 2] - boxes[k, 0], boxes[k, 3] - boxes[k, 1])
        photos[name] = []
        for i in (0, 4, 8):
            x1, y1 = int(max(0, cx - half)), int(max(0, cy - half))
            crop = frames[i][y1 : int(cy + half), x1 : int(cx + half)]
            path = out / f"{name}{i}.png"
            cv2.imwrite(str(path), cv2.resize(crop, (240, 240), interpolation=cv2.INTER_CUBIC))
            photos[name].append(path)
    return photos


def clip_of(people: list[list[Path]], path: Path, repeats: int = 10) -> Path:
    """A video showing each person's photos in turn, each photo ``repeats`` frames, each person at their own place.

    A gap of blank frames separates people, so that no track runs from one face into the next.
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (480, 240))
    blank = np.full((240, 480, 3), 40, np.uint8)
    for place, photos in enumerate(people):
        for photo in photos:
            canvas = blank.copy()
            canvas[:, 240 * place : 240 * (place + 1)] = cv2.imread(str(photo))
            for _ in range(repeats):
                writer.write(canvas)
        for _ in range(repeats):
            writer.write(blank)
    writer.release()
    return path


def edgesight(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def enrolled(people1: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    out = tmp_path_factory.mktemp("faces")
    photos = face_photos(people1, out)
    gallery = out / "faces.db"
    result = edgesight(
        "faces",
        "enroll",
        "--name",
        "alice",
        *map(str, photos["alice"]),
        "--gallery",
        str(gallery),
        "--weights",
        WEIGHTS,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert "enrolled 3 face(s) of 'alice'" in result.stdout
    return gallery, photos


def test_faces_commands_list_remove_and_refuse_bad_input(
    enrolled: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    gallery, _photos = enrolled
    copy = tmp_path / "copy.db"
    copy.write_bytes(gallery.read_bytes())
    listed = edgesight("faces", "list", "--gallery", str(copy))
    assert listed.returncode == 0 and listed.stdout.startswith("alice\t3 face(s)")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    for images, needle in (([str(blank)], "no face found in"), ([str(tmp_path / "gone.jpg")], "image not found")):
        bad = edgesight("faces", "enroll", "--name", "x", *images, "--gallery", str(copy), "--weights", WEIGHTS)
        lines = [line for line in bad.stderr.splitlines() if "random weights" not in line]  # the embedder's warning
        assert (
            bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgesight: error: ") and needle in lines[0]
        )
    assert "x\t" not in edgesight("faces", "list", "--gallery", str(copy)).stdout  # nothing half-enrolled
    assert edgesight("faces", "remove", "alice", "--gallery", str(copy)).returncode == 0
    again = edgesight("faces", "remove", "alice", "--gallery", str(copy))
    assert again.returncode == 2 and "nobody named 'alice'" in again.stderr
    assert "nobody is enrolled" in edgesight("faces", "list", "--gallery", str(copy)).stdout


def test_a_run_recognizes_the_enrolled_face_and_not_the_other(
    enrolled: tuple[Path, dict[str, list[Path]]], tmp_path: Path, endpoint: str
) -> None:
    gallery, photos = enrolled
    clip = clip_of([photos["alice"], photos["bob"]], tmp_path / "clip.mp4")
    faces = {
        "recognize": True,
        "gallery": str(gallery),
        "weights": WEIGHTS,
        "threshold": THRESHOLD,
        "every_n_frames": 2,
    }
    config = config_for(
        endpoint, [{"id": "door", "source": str(clip)}], {"path": "mtcnn", "device": "cpu"}, faces=faces
    )
    got = run_and_collect(config)
    schema = json.loads((SCHEMAS / "detections-1.schema.json").read_text())
    dets = got.detections("door")
    assert len(dets) == 80
    first_half = [d for m in dets[:40] for d in m.detections]
    second_half = [d for m in dets[40:] for d in m.detections]
    for m in dets:
        jsonschema.validate(m.raw, schema)
    alice = [d for d in first_half if d.identity == "alice"]
    assert len(alice) >= 0.8 * len(first_half) > 0, "alice's photos are recognized (after the first sampled frame)"
    assert all(d.distance is not None and d.distance <= THRESHOLD for d in alice)
    assert second_half and not any(d.identity for d in second_half), "bob is not enrolled"
    anon = {d.track_id: d.anon_id for d in second_half if d.anon_id}
    assert anon and all(a.startswith("anon-") for a in anon.values())
    # stable per track (frames published before the face thread's first look at a track carry none yet)
    assert all(d.anon_id in (None, anon[d.track_id]) for d in second_half if d.track_id in anon)
    assert sum(d.anon_id is not None for d in second_half) >= 0.8 * len(second_half)
    events = [m for m in got.messages if isinstance(m, EventMessage) and m.kind == "identity"]
    assert [e.raw["identity"] for e in events] == ["alice"] * len(events) and events
    event_schema = json.loads((SCHEMAS / "event-1.schema.json").read_text())
    for e in events:
        jsonschema.validate(e.raw, event_schema)


def test_a_face_embedder_chained_after_a_face_detector_names_the_enrolled_face(
    enrolled: tuple[Path, dict[str, list[Path]]], tmp_path: Path, endpoint: str
) -> None:
    """The DeepStream-style chain: MTCNN as the primary detector, the face embedder as a secondary model on its
    ``face`` boxes (every frame, no tracking): identity, distance and the vector on each face."""
    gallery, photos = enrolled
    clip = clip_of([photos["alice"], photos["bob"]], tmp_path / "clip.mp4", repeats=4)
    embed = {
        "kind": "embed",
        "model": WEIGHTS,
        "gallery": str(gallery),
        "threshold": THRESHOLD,
        "classes": ["face"],
        "embedding": True,
    }
    config = config_for(
        endpoint,
        [{"id": "door", "source": str(clip)}],
        {"path": "mtcnn", "device": "cpu"},
        tracking={"enabled": False},
        secondary=[embed],
    )
    got = run_and_collect(config)
    schema = json.loads((SCHEMAS / "detections-1.schema.json").read_text())
    msgs = got.detections("door")
    assert len(msgs) == 32
    for m in msgs:
        jsonschema.validate(m.raw, schema)
    faces = [(m.frame_index, item) for m in msgs for item in m.raw["detections"]]
    alice = [item for i, item in faces if i < 12]
    bob = [item for i, item in faces if 16 <= i < 28]
    assert len(alice) >= 10 and len(bob) >= 10
    assert all(item["identity"] == "alice" and item["distance"] <= THRESHOLD for item in alice)
    assert all(item["identity"] is None and item["distance"] > THRESHOLD for item in bob)
    vectors = np.array([item["embedding"] for item in alice + bob])
    assert vectors.shape[1] == 512 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert np.linalg.norm(vectors[0] - vectors[1]) < 0.01, "the same photo, the same vector"


def test_an_onnx_embedder_gives_the_embeddings_of_the_same_network(tmp_path: Path) -> None:
    """An ONNX face-embedding model (here InceptionResnetV1 exported with torch) through OnnxEmbedder."""
    import torch

    from pipeline.faces.embedder import FacenetEmbedder, OnnxEmbedder, seeded_facenet

    path = tmp_path / "embedder.onnx"
    torch.onnx.export(
        seeded_facenet(3).eval(),
        (torch.zeros(1, 3, 160, 160),),
        str(path),
        input_names=["images"],
        output_names=["embeddings"],
        dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
        dynamo=False,
    )
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (7, 7), 0)
    boxes = np.array([[10, 20, 110, 140], [150, 30, 260, 170]], np.float32)
    onnx = OnnxEmbedder(str(path))
    got, want = onnx.embed(image, boxes), FacenetEmbedder("seeded:3").embed(image, boxes)
    assert got.shape == want.shape == (2, 512)
    assert np.abs(got - want).max() < 1e-4
    assert np.linalg.norm(got[0] - got[1]) > 1e-3  # two different crops, two different embeddings
    assert onnx.name.startswith("onnx-")  # galleries keep embeddings of different embedders apart
    with pytest.raises(ModelError, match="face embedder model not found"):
        OnnxEmbedder(str(tmp_path / "missing.onnx"))
