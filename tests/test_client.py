"""The bus client on its own: light to import, a wheel that needs none of the pipeline's dependencies, and a real
publisher's messages received, typed and checked against the JSON Schemas."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgesight_client
from edgesight_client import DetectionsMessage, StatusMessage, Subscriber
from pipeline.bus import BusPublisher
from pipeline.messages import Frame, FrameResult
from pipeline.schema import detections_body, status_body

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "cv2", "ultralytics", "numpy", "onnxruntime", "onnx", "pydantic", "yaml")
"""What a service that only subscribes must not need (NumPy included: the client has no use for it)."""
HEAVY_DISTRIBUTIONS = {"torch", "torchvision", "ultralytics", "opencv-python", "opencv-python-headless", "numpy"}
HEAVY_DISTRIBUTIONS |= {"onnxruntime", "onnxruntime-gpu", "onnx", "lap", "pycocotools", "pydantic", "pyyaml"}


def test_the_client_imports_nothing_heavy_nor_the_pipeline() -> None:
    """Imported and used (a message decoded and validated, a subscriber opened and closed), in a fresh interpreter."""
    code = f"""
import sys
from pathlib import Path
import edgesight_client as c
body = b'{{"schema": "edgesight.status/1", "stream_id": "cam", "event": "eos", "at": 1.0}}'
msg = c.decode(b"status.cam", body)
c.validate(msg.raw)
with c.Subscriber("inproc://nobody") as sub:
    assert sub.recv(0.01) is None
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & {set(HEAVY) | {"pipeline", "engines"}})
assert not loaded, f"the client imported {{loaded}}"
assert Path(c.__file__).parent == Path({str(REPO / "edgesight_client")!r}), c.__file__
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr


def build_client_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of ``client/`` offline, from a copy of the repository's layout (the link included)."""
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(REPO / "client", tmp_path / "client", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "edgesight_client", tmp_path / "edgesight_client", ignore=ignore)
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "./client"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("edgesight_client-*.whl")
    return wheel


def requirement_name(spec: str) -> str:
    """``pyzmq>=25`` → ``pyzmq``; ``jsonschema>=4.20; extra == "validate"`` → ``jsonschema``."""
    name = spec.split(";")[0].strip()
    for stop in "<>=!~[ (":
        name = name.split(stop)[0]
    return name.lower().replace("_", "-")


def test_the_client_wheel_needs_none_of_the_pipeline_and_holds_the_schemas(tmp_path: Path) -> None:
    wheel = build_client_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(metadata).decode("utf-8"))
    requires = meta.get_all("Requires-Dist") or []
    always = {requirement_name(r) for r in requires if "extra ==" not in r}
    assert meta["Name"] == "edgesight-client"
    assert always == {"pyzmq", "orjson"}, requires
    assert not {requirement_name(r) for r in requires} & HEAVY_DISTRIBUTIONS, requires
    schemas = {f"edgesight_client/schemas/{p.name}" for p in (REPO / "edgesight_client" / "schemas").glob("*.json")}
    assert len(schemas) == 4 and schemas <= names
    modules = {f"edgesight_client/{p.name}" for p in (REPO / "edgesight_client").glob("*.py")}
    assert modules <= names and "edgesight_client/py.typed" in names
    assert not [n for n in names if n.split("/")[0] in ("pipeline", "engines")]


def test_the_old_import_paths_are_the_same_objects() -> None:
    """``pipeline.*`` re-exports the client, so one ``except``/``isinstance`` covers both names."""
    from pipeline import errors, messages, schema, subscriber
    from pipeline.curve import CurveClient

    assert subscriber.Subscriber is Subscriber and CurveClient is edgesight_client.CurveClient
    assert schema.decode is edgesight_client.decode and schema.DetectionsMessage is DetectionsMessage
    assert messages.Detection is edgesight_client.Detection
    assert errors.ConfigError is edgesight_client.ConfigError
    assert issubclass(errors.SourceError, edgesight_client.EdgesightError)


ENGINE = {"backend": "onnxruntime", "device": "cpu", "precision": "fp32", "model": "m.pt", "max_batch": 1}


def frame_result(index: int) -> FrameResult:
    frame = Frame("gate", index, index * 40.0, time.time(), np.zeros((36, 64, 3), np.uint8))
    rows = np.array([[4, 5, 30, 33, 0.91, 0], [40, 2, 60, 20, 0.4, 2]], np.float32)
    return FrameResult.from_rows(frame, rows, {0: "person", 2: "car"})


def test_a_real_publisher_to_the_client_subscriber_validated(endpoint: str) -> None:
    """The pipeline's publisher sends what it builds from real results; the client receives every message, typed,
    and with ``validate`` checks each against its JSON Schema: one that decodes but breaks the schema is refused."""
    bus = BusPublisher(endpoint, lossless=True)
    stop = threading.Event()
    try:
        with Subscriber(endpoint, ["detections.gate", "status.gate"], validate=True) as sub:
            assert bus.wait_for_subscriber(stop, timeout_s=10)
            bus.send("status.gate", status_body("gate", "start", time.time(), engine=ENGINE), stop)
            for seq in range(20):
                bus.send("detections.gate", detections_body(frame_result(seq), seq, "m.pt", time.time()), stop)
            broken = detections_body(frame_result(20), 20, "m.pt", time.time()) | {"width": -1}
            bus.send("detections.gate", broken, stop)
            bus.send("status.gate", status_body("gate", "eos", time.time(), frames=21), stop)
            got = []
            while (msg := sub.recv(5)) is not None:
                got.append(msg)
                if isinstance(msg, StatusMessage) and msg.event == "eos":
                    break
            invalid = sub.invalid
    finally:
        bus.close()
    assert [m.event for m in got if isinstance(m, StatusMessage)] == ["start", "eos"]
    detections = [m for m in got if isinstance(m, DetectionsMessage)]
    assert [m.seq for m in detections] == list(range(20)) and invalid == 1
    first = detections[0].detections
    assert [(d.label, d.class_id) for d in first] == [("person", 0), ("car", 2)]
    assert first[0].box == (4.0, 5.0, 30.0, 33.0) and first[0].confidence == pytest.approx(0.91)


def test_validate_names_the_problem_and_needs_a_known_schema() -> None:
    good = {"schema": "edgesight.status/1", "stream_id": "cam", "event": "eos", "at": 1.0}
    edgesight_client.validate(good)
    with pytest.raises(edgesight_client.MessageError, match=r"edgesight\.status/1: at event: 'later' is not one of"):
        edgesight_client.validate({**good, "event": "later"})
    with pytest.raises(edgesight_client.MessageError, match=r"no JSON Schema for 'edgesight\.status/2'"):
        edgesight_client.validate({**good, "schema": "edgesight.status/2"})
    with pytest.raises(edgesight_client.MessageError, match="missing or malformed 'schema'"):
        edgesight_client.validate({"stream_id": "cam"})
    assert edgesight_client.schema_for("edgesight.counts/1.4")["$id"] == "edgesight.counts/1"
