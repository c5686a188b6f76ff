"""Config: examples load; unknown keys, wrong types and missing files give the right message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    FileSourceConfig,
    ImagesSourceConfig,
    SyntheticSourceConfig,
    UrlSourceConfig,
    WebcamSourceConfig,
    build_config,
    load_config,
    parse_source,
)
from pipeline.errors import ConfigError
from pipeline.queues import OverflowPolicy

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_examples_load(path: Path) -> None:
    config = load_config(path)
    assert config.streams
    for stream in config.streams:
        expected = OverflowPolicy.DROP_OLDEST if stream.source.live else OverflowPolicy.BLOCK
        assert stream.policy is (stream.queue_policy or expected)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("streams:\n  - id: a\n    source: x.mp4\n    sorce: y\n", r"c\.yaml: streams\[0\]\.sorce: unknown key"),
        ("streams:\n  - id: a\n    source: x.mp4\nmodle: {}\n", r"c\.yaml: modle: unknown key"),
        (
            "streams:\n  - id: a\n    source: {type: file, path: x.mp4, repeat: true}\n",
            r"streams\[0\]\.source\.repeat: unknown key",
        ),
        ("streams:\n  - id: a\n    source: x.mp4\nmodel: {imgsz: big}\n", r"model\.imgsz: .*integer"),
        ("streams:\n  - id: a\n    source: x.mp4\nmodel: {conf: 2}\n", r"model\.conf: .*less than or equal to 1"),
        ("streams:\n  - id: a\n    source: x.mp4\nmodel: {imgsz: 100}\n", r"model\.imgsz: .*multiple of 32"),
        ("streams: []\n", r"streams: .*at least 1"),
        ("streams:\n  - id: 'bad id!'\n    source: x.mp4\n", r"streams\[0\]\.id"),
        ("streams:\n  - {id: a, source: x.mp4}\n  - {id: a, source: y.mp4}\n", r"stream id 'a' is used twice"),
        ("streams:\n  - {id: a, source: {type: url, url: ftp://x}}\n", r"streams\[0\]\.source\.url"),
        ("- just\n- a list\n", r"expected a mapping"),
        ("streams: [\n", r"invalid YAML at line"),
        ("streams:\n  - {id: a, source: x.mp4}\nfaces: {detector: mtcnn, every: 3}\n", r"faces\.every: unknown key"),
        ("streams:\n  - {id: a, source: x.mp4}\nfaces: {search: persons, recognize: true}\n", r"needs faces\.detector"),
        ("streams:\n  - {id: a, source: x.mp4}\nfaces: {threshold: 0}\n", r"faces\.threshold"),
        ("streams:\n  - {id: a, source: x.mp4}\nfaces: {}\n", r"nothing to do unless faces\.recognize"),
        (
            "streams:\n  - {id: a, source: x.mp4}\npublish: {masks: {tolerance_px: -1}}\n",
            r"publish\.masks\.tolerance_px",
        ),
    ],
)
def test_bad_configs_name_the_key_and_file(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: '.*nope\.yaml'"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "kind", "field", "value"),
    [
        ("0", WebcamSourceConfig, "device", 0),
        ("/dev/video2", WebcamSourceConfig, "device", "/dev/video2"),
        ("rtsp://10.0.0.5/live", UrlSourceConfig, "url", "rtsp://10.0.0.5/live"),
        ("http://cam.local/mjpg", UrlSourceConfig, "url", "http://cam.local/mjpg"),
        ("synthetic://?seed=7&frames=20", SyntheticSourceConfig, "seed", 7),
        ("clip.mp4", FileSourceConfig, "path", Path("clip.mp4")),
    ],
)
def test_source_shorthand(text: str, kind: type, field: str, value: object) -> None:
    config = build_config({"streams": [{"id": "s", "source": parse_source(text)}]}, "test")
    source = config.streams[0].source
    assert isinstance(source, kind)
    assert getattr(source, field) == value


def test_folder_shorthand_is_an_image_source(tmp_path: Path) -> None:
    config = build_config({"streams": [{"id": "s", "source": str(tmp_path)}]}, "test")
    assert isinstance(config.streams[0].source, ImagesSourceConfig)


def test_policy_defaults_follow_the_source() -> None:
    config = build_config(
        {
            "streams": [
                {"id": "f", "source": "a.mp4"},
                {"id": "c", "source": "rtsp://h/x"},
                {"id": "r", "source": {"type": "file", "path": "a.mp4", "realtime": True}},
                {"id": "o", "source": "rtsp://h/y", "queue_policy": "block"},
            ]
        },
        "test",
    )
    policies = {s.id: s.policy for s in config.streams}
    assert policies == {
        "f": OverflowPolicy.BLOCK,
        "c": OverflowPolicy.DROP_OLDEST,
        "r": OverflowPolicy.DROP_OLDEST,
        "o": OverflowPolicy.BLOCK,
    }


def test_the_model_config_builds_the_engines_spec() -> None:
    from pipeline.assembly import model_spec

    model = {"path": "m.pt", "imgsz": 320, "conf": 0.4, "iou": 0.5, "max_det": 20, "classes": [0, 2], "device": "cpu"}
    model |= {"batch_size": 4, "threads": 2, "cache_dir": "~/engines", "cuda_graphs": False, "workspace_gb": 2}
    streams = [{"id": f"s{i}", "source": "synthetic://"} for i in range(3)]
    config = build_config({"streams": streams, "model": model, "tracking": {"enabled": False}}, "t")
    spec = config.model.spec(len(config.streams))
    assert (spec.model, spec.fallback_model, spec.imgsz, spec.conf, spec.iou, spec.max_det) == (
        "m.pt",
        None,
        320,
        0.4,
        0.5,
        20,
    )
    assert (spec.classes, spec.device, spec.max_batch, spec.threads, spec.streams) == ((0, 2), "cpu", 4, 2, 3)
    assert spec.cache_dir is not None and "~" not in str(spec.cache_dir) and not spec.cuda_graphs
    assert model_spec(config) == spec, "without tracking the detector keeps model.conf"
    tracked = build_config({"streams": streams, "model": model}, "t")
    assert model_spec(tracked).conf < 0.4, "with tracking the detector also hands low boxes to the tracker"
    default = build_config({"streams": streams, "model": {"classes": ["person", 0]}}, "t").model.spec(3)
    assert (default.model, default.fallback_model, default.classes) == ("yolo11n.pt", "edgesight-det", None)


def test_the_engines_a_config_and_the_command_accept_are_the_registrys() -> None:
    import typing

    from engines.registry import BACKENDS
    from pipeline.cli import ENGINES, build_parser
    from pipeline.config import ModelConfig

    assert typing.get_args(ModelConfig.model_fields["engine"].annotation) == ("auto", *BACKENDS)
    assert ["auto", *BACKENDS] == ENGINES
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    engine = next(a for a in run._actions if "--engine" in a.option_strings)
    assert list(engine.choices) == ENGINES  # type: ignore[arg-type]
