"""What is kept of events: the store (filters, retention), clips (H.264 MP4 from ``pre_s`` before to ``post_s``
after, checked by decoding them) and snapshots, alone and from a pipeline on a generated scene."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from helpers import config_for, run_and_collect

from pipeline.config import ClipsConfig, EventStoreConfig
from pipeline.media.clips import ClipRecorder
from pipeline.media.store import EventStore
from pipeline.schema import EventMessage
from pipeline.synth.writer import write_scene

FPS = 25.0
GATE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}
ZONE = {"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1.0], [0.1, 1.0]]}


def body(event_id: str, stream: str = "cam", label: str = "person", at: float = 100.0, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "stream_id": stream, "kind": "line_cross", "label": label, "started_at": at,
            "ended_at": None, "score": 0.9, "type": "new", **extra}  # fmt: skip


def decode(path: Path) -> tuple[list[float], list[np.ndarray], str]:
    """Each frame's time (s) and image, and the codec."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.pts * f.time_base), f.to_ndarray(format="gray")) for f in container.decode(stream)]
        return [t for t, _ in frames], [img for _, img in frames], stream.codec_context.name


def test_the_store_filters_updates_and_keeps_within_its_limits(tmp_path: Path) -> None:
    store = EventStore(EventStoreConfig(dir=tmp_path / "ev", max_age_h=1.0, max_size_mb=0.002))
    store.record(body("a", at=1000.0))
    store.record(body("b", stream="door", label="car", at=2000.0))
    store.record(body("c", at=3000.0))
    store.record(body("a", at=1000.0, type="end", ended_at=1010.0))
    assert [e.event_id for e in store.events()] == ["c", "b", "a"], "newest first"
    assert [e.event_id for e in store.events(stream_id="cam")] == ["c", "a"]
    assert [e.event_id for e in store.events(label="car")] == ["b"]
    assert [e.event_id for e in store.events(since=1500.0, until=2500.0)] == ["b"]
    a = store.get("a")
    assert a is not None and a.ended_at == 1010.0 and a.body["type"] == "end"
    for event_id in ("b", "c"):  # 1.5 kB each: together over the 2 kB limit
        name, path = store.file("cam", event_id, ".jpg")
        path.write_bytes(b"x" * 1500)
        store.attach_snapshot(event_id, name, None)
    removed = store.prune(now=1000.0 + 3600.0 + 20.0)
    assert removed == 2, "'a' is past the age limit, 'b' is the oldest over the size limit"
    assert [e.event_id for e in store.events()] == ["c"]
    assert not any(p.name == "b.jpg" for p in (tmp_path / "ev").rglob("*.jpg")), "its file went with it"
    with pytest.raises(ValueError):
        store.path("../outside.jpg")
    store.close()


def test_a_clip_runs_from_pre_s_before_its_event_to_post_s_after_it_ended(tmp_path: Path) -> None:
    """Frame i is painted grey level i, so the decoded clip says which frames it holds."""
    store = EventStore(EventStoreConfig(dir=tmp_path / "ev"))
    store.record(body("e1"))
    recorder = ClipRecorder("cam", ClipsConfig(pre_s=2.0, post_s=1.5), store, live=False)
    for i in range(250):
        pts = i * 1000.0 / FPS
        recorder.frame(lambda i=i: np.full((120, 160, 3), i, np.uint8), pts)
        if i == 150:  # the event starts at 6.0 s ...
            recorder.open("e1")
        if i == 175:  # ... and ends at 7.0 s
            recorder.close("e1")
    recorder.finish()
    stored = store.get("e1")
    assert stored is not None and stored.clip is not None, "the clip is in the store"
    times, images, codec = decode(store.path(stored.clip))
    assert codec == "h264"
    assert stored.clip_start is not None and stored.clip_end is not None
    first, last = round(stored.clip_start * FPS), round(stored.clip_end * FPS)
    assert 150 - 3 * FPS <= first <= 150 - 2 * FPS, f"starts at the keyframe at or before 4.0 s: frame {first}"
    assert last == 175 + 38, f"ends 1.5 s after the event ended at frame 175: frame {last}"
    assert len(images) == last - first + 1, "every frame between, none twice"
    assert abs(times[-1] - times[0] - (last - first) / FPS) < 0.01
    levels = [float(img.mean()) for img in images]
    assert abs(levels[0] - first) < 4 and abs(levels[-1] - last) < 4, "the frames painted at those times"


def test_a_pipeline_keeps_a_snapshot_and_a_clip_per_event(tmp_path: Path, endpoint: str) -> None:
    scene = write_scene(tmp_path / "scene", 5, 300, occlusion=False)
    stream = {"id": "s", "source": str(scene / "scene.mp4"), "lines": [GATE], "zones": [ZONE]}
    events = {
        "store": {"dir": str(tmp_path / "events")},
        "snapshots": {},
        "clips": {"pre_s": 1.0, "post_s": 1.0, "kinds": ["line_cross", "zone_enter"]},
    }
    config = config_for(endpoint, [stream], {"path": "edgesight-det", "imgsz": 416}, events=events)
    got = run_and_collect(config)
    assert got.report is not None and got.report.sink_failures == {} and got.report.sink_drops == {}
    messages = [m for m in got.messages if isinstance(m, EventMessage)]
    crossings = [m for m in messages if m.kind in ("line_cross", "zone_enter")]
    assert len(crossings) >= 3, "a scene with crossings"
    store = EventStore(EventStoreConfig(dir=tmp_path / "events"))
    try:
        assert {e.event_id for e in store.events(limit=1000)} == {m.event_id for m in messages}
        fps = cv2.VideoCapture(str(scene / "scene.mp4")).get(cv2.CAP_PROP_FPS)
        for message in crossings:
            raw = message.raw
            assert raw.get("snapshot") == message.event_id and raw.get("clip") == message.event_id
            stored = store.get(message.event_id)
            assert stored is not None and stored.snapshot and stored.crop and stored.clip, stored
            full = cv2.imread(str(store.path(stored.snapshot)))
            crop = cv2.imread(str(store.path(stored.crop)))
            assert full is not None and crop is not None and crop.shape[0] < full.shape[0]
            times, _, codec = decode(store.path(stored.clip))
            duration = times[-1] - times[0] + 1 / fps
            event_t = raw["pts_ms"] / 1000.0
            assert codec == "h264"
            assert stored.clip_start is not None and stored.clip_end is not None
            want_start = max(0.0, event_t - 1.0)
            assert want_start - 1.0 - 0.1 <= stored.clip_start <= want_start + 0.1, "pre_s before, from a keyframe"
            assert min(event_t + 1.0, 299 / fps) - 0.1 <= stored.clip_end, "post_s after (or the scene's end)"
            assert abs(duration - (stored.clip_end - stored.clip_start + 1 / fps)) < 0.05, "it decodes whole"
    finally:
        store.close()
