"""Property-based tests (hypothesis): config parsing and message decoding never fail in an unplanned way."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import PipelineConfig, build_config
from pipeline.errors import ConfigError
from pipeline.messages import Detection
from pipeline.schema import DetectionsMessage, MessageError, decode

KEYS = [
    "streams",
    "model",
    "publish",
    "tracking",
    "events",
    "faces",
    "queue_size",
    "id",
    "source",
    "path",
    "conf",
    "imgsz",
    "type",
    "url",
    "endpoint",
    "lines",
    "zones",
    "points",
    "name",
    "reconnect",
    "base_s",
    "cnf",
    "",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=20)
)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_any_config_data_is_accepted_or_refused_in_one_line(data: Any) -> None:
    try:
        config = build_config(data, "prop.yaml")
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith("prop.yaml") and "\n" not in text
    else:
        assert isinstance(config, PipelineConfig) and config.streams


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True),
                "source": st.sampled_from(["a.mp4", "rtsp://h/x", "synthetic://?frames=3", "0", "/dev/video1"]),
            },
            optional={"queue_size": st.integers(-2, 2000), "max_frames": st.integers(-1, 10)},
        ),
        min_size=1,
        max_size=4,
    ),
    st.fixed_dictionaries({}, optional={"conf": st.floats(-1, 2), "imgsz": st.integers(0, 5000)}),
)
def test_stream_lists_validate_or_name_the_bad_key(streams: list[dict[str, Any]], model: dict[str, Any]) -> None:
    try:
        config = build_config({"streams": streams, "model": model}, "c.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and ("streams" in str(exc) or "model" in str(exc))
    else:
        assert [s.id for s in config.streams] == [s["id"] for s in streams]
        assert len({s["id"] for s in streams}) == len(streams), "duplicate ids must be refused"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=512), st.none() | st.binary(max_size=32))
def test_arbitrary_bytes_decode_or_raise_message_error(topic: bytes, body: bytes, extra: bytes | None) -> None:
    with contextlib.suppress(MessageError):
        decode(topic, body, extra)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_arbitrary_json_decodes_or_raises_message_error(data: Any) -> None:
    for schema in ("edgesight.detections/1", "edgesight.status/1", "edgesight.event/1", "edgesight.counts/1"):
        body = {**data, "schema": schema} if isinstance(data, dict) else data
        with contextlib.suppress(MessageError, orjson.JSONEncodeError):
            decode(b"detections.x", orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS))


finite = st.floats(-1e4, 1e4, allow_nan=False)
detections = st.lists(
    st.builds(
        Detection,
        class_id=st.integers(0, 1000),
        label=st.text(min_size=1, max_size=10),
        confidence=st.floats(0, 1),
        box=st.tuples(finite, finite, finite, finite),
        track_id=st.none() | st.integers(0, 10**6),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), detections)
def test_detections_survive_the_wire(seq: int, dets: list[Detection]) -> None:
    body = {
        "schema": "edgesight.detections/1",
        "stream_id": "cam",
        "seq": seq,
        "frame_index": seq,
        "pts_ms": 1.0,
        "captured_at": 2.0,
        "published_at": 3.0,
        "width": 640,
        "height": 360,
        "model": "m",
        "detections": [d.to_json() for d in dets],
    }
    msg = decode(b"detections.cam", orjson.dumps(body))
    assert isinstance(msg, DetectionsMessage) and msg.seq == seq and len(msg.detections) == len(dets)
    for got, want in zip(msg.detections, dets, strict=True):
        assert (got.class_id, got.label, got.track_id) == (want.class_id, want.label, want.track_id)
        assert all(abs(a - b) <= 0.005 for a, b in zip(got.box, want.box, strict=True))
        assert abs(got.confidence - want.confidence) <= 1e-6
