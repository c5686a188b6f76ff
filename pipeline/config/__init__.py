"""The pipeline's configuration: a pydantic schema that forbids unknown keys.

A YAML file (``edgesight run CONFIG.yaml``) and the quick command-line form
(``--source … --model …``) both end up as a :class:`PipelineConfig`. Relative
paths are taken relative to the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline.config.analytics import (
    ClipsConfig,
    EventsConfig,
    EventStoreConfig,
    LineConfig,
    MotionConfig,
    PrivacyConfig,
    SnapshotsConfig,
    TrackingConfig,
    ZoneConfig,
)
from pipeline.config.base import (
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    NAME_PATTERN,
    OFFLINE_FALLBACK_MODEL,
    STREAM_ID_PATTERN,
    _Strict,
)
from pipeline.config.imageops import (
    GEOMETRIC_OPS,
    ClaheOp,
    CropOp,
    DenoiseOp,
    FlipOp,
    GammaOp,
    GrayscaleOp,
    ImageOpConfig,
    ResizeOp,
    RotateOp,
    UndistortOp,
)
from pipeline.config.model import FacesConfig, ModelConfig, SecondaryConfig
from pipeline.config.serving import (
    ApiConfig,
    ControlConfig,
    CurveConfig,
    MasksConfig,
    MetricsConfig,
    MqttConfig,
    MqttTlsConfig,
    PreviewConfig,
    PublishConfig,
    WebhookConfig,
)
from pipeline.config.sources import (
    SOURCE_TYPES,
    FileSourceConfig,
    ImagesSourceConfig,
    SourceConfig,
    SyntheticSourceConfig,
    UrlSourceConfig,
    WebcamSourceConfig,
    parse_source,
)
from pipeline.config.stream import ReconnectConfig, StreamConfig
from pipeline.envexpand import expand_env
from pipeline.errors import ConfigError


class PipelineConfig(_Strict):
    """A whole pipeline: streams, one model, one publisher."""

    streams: list[StreamConfig] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    publish: PublishConfig = PublishConfig()
    queue_size: int = Field(2, ge=1, le=1024)
    """Size of the queues between preprocess, infer and publish (raised to twice the batch when batching)."""
    preprocess_threads: int | None = Field(None, ge=1, le=64)
    """Preprocess threads, each serving a fixed share of the streams (default: 1; up to 4 on a GPU when some stream
    is a file read as fast as it decodes, or has image operations or motion gating)."""
    tracking: TrackingConfig = TrackingConfig()
    events: EventsConfig = EventsConfig()
    faces: FacesConfig | None = None
    """Off unless present (``--faces``, ``--recognize``)."""
    metrics: MetricsConfig = MetricsConfig()
    preview: PreviewConfig = PreviewConfig()
    control: ControlConfig = ControlConfig()
    secondary: list[SecondaryConfig] = []
    """Classifiers and text reading on the primary detections, in order."""

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineConfig:
        seen: set[str] = set()
        for stream in self.streams:
            if stream.id in seen:
                raise ValueError(f"streams: stream id '{stream.id}' is used twice")
            seen.add(stream.id)
            if (stream.lines or stream.zones) and not self.tracking.enabled:
                raise ValueError(f"streams: stream '{stream.id}': lines and zones need tracking.enabled")
        for stream in self.streams:
            geometric = any(op.op in GEOMETRIC_OPS for op in stream.preprocess)
            if geometric and self.publish.masks.rle:
                raise ValueError(
                    f"streams: stream '{stream.id}': publish.masks.rle with crop/rotate/flip/resize/"
                    "undistort is not supported (polygons are mapped back; use polygon)"
                )
        faces = self.faces
        if faces is not None and not self.tracking.enabled and (faces.search == "persons" or faces.detector is None):
            raise ValueError(
                "faces: recognition of the main model's faces and faces.search: persons need tracking.enabled"
            )
        if faces is not None and faces.search == "persons" and faces.detector is None:
            raise ValueError("faces.search: persons needs faces.detector (the face model run on person crops)")
        if faces is not None and faces.detector is None and not faces.recognize:
            raise ValueError("faces: with no faces.detector there is nothing to do unless faces.recognize is true")
        return self


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif previous == "source" and part in SOURCE_TYPES:
            pass  # the union's branch name (the ``type`` tag) adds nothing for the user
        else:
            name = str(part) if str(part).isprintable() and str(part) else repr(str(part))  # "\n" stays one line
            out += f".{name}" if out else name
        previous = part
    return out or "(top level)"


def describe_validation_error(exc: ValidationError, origin: str) -> str:
    """One line naming the file and each bad key."""
    parts = []
    for err in exc.errors():
        where = _format_location(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            # a whole-config rule names its own keys ("streams: …", "faces: …")
            parts.append(msg if where == "(top level)" and ": " in msg else f"{where}: {msg}")
    return f"{origin}: " + "; ".join(parts)


def build_config(data: Any, origin: str) -> PipelineConfig:
    """Validate a config mapping; ``origin`` names where it came from in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origin)) from exc


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read and validate a YAML config file, ``${NAME}`` in its values taken from ``environ`` (the process's)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: '{path}'")
    if not path.is_file():
        raise ConfigError(f"config path is not a file: '{path}'")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from exc
    data = expand_env(data, os.environ if environ is None else environ, str(path))
    return build_config(data, str(path))


__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_MODEL",
    "GEOMETRIC_OPS",
    "NAME_PATTERN",
    "OFFLINE_FALLBACK_MODEL",
    "SOURCE_TYPES",
    "STREAM_ID_PATTERN",
    "ApiConfig",
    "ClaheOp",
    "ClipsConfig",
    "ControlConfig",
    "CropOp",
    "CurveConfig",
    "DenoiseOp",
    "EventStoreConfig",
    "EventsConfig",
    "FacesConfig",
    "FileSourceConfig",
    "FlipOp",
    "GammaOp",
    "GrayscaleOp",
    "ImageOpConfig",
    "ImagesSourceConfig",
    "LineConfig",
    "MasksConfig",
    "MetricsConfig",
    "ModelConfig",
    "MotionConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "PipelineConfig",
    "PreviewConfig",
    "PrivacyConfig",
    "PublishConfig",
    "ReconnectConfig",
    "ResizeOp",
    "RotateOp",
    "SecondaryConfig",
    "SnapshotsConfig",
    "SourceConfig",
    "StreamConfig",
    "SyntheticSourceConfig",
    "TrackingConfig",
    "UndistortOp",
    "UrlSourceConfig",
    "WebcamSourceConfig",
    "WebhookConfig",
    "ZoneConfig",
    "build_config",
    "describe_validation_error",
    "load_config",
    "parse_source",
]
