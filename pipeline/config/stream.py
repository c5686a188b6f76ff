"""One stream: its source, queue, supervision, image operations, lines and zones."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline.config.analytics import LineConfig, MotionConfig, PrivacyConfig, ZoneConfig
from pipeline.config.base import (
    STREAM_ID_PATTERN,
    _Strict,
)
from pipeline.config.imageops import (
    ImageOpConfig,
)
from pipeline.config.sources import (
    SourceConfig,
    UrlSourceConfig,
    WebcamSourceConfig,
    parse_source,
)
from pipeline.queues import OverflowPolicy


class ReconnectConfig(_Strict):
    """How a live source (camera, RTSP/HTTP stream) is supervised; see pipeline/supervision.py."""

    enabled: bool = True
    base_s: float = Field(0.5, gt=0, le=60)
    """First wait before reconnecting; doubles on each failure …"""
    cap_s: float = Field(10.0, gt=0, le=3600)
    """… up to this."""
    jitter: float = Field(0.25, ge=0, le=1)
    """Each wait is spread by ± this share (cameras behind one switch do not retry in step)."""
    idle_timeout_s: float = Field(10.0, gt=0, le=3600)
    """A read that takes longer than this is a stalled source (time spent waiting on a full queue never counts)."""
    offline_after_s: float = Field(30.0, gt=0)
    """Down this long: state ``offline`` (still retried)."""
    max_attempts: int | None = Field(None, ge=1)
    """Give up (the stream ends with an error) after this many failed attempts in a row; ``None``: never."""


class StreamConfig(_Strict):
    """One stream: a source, its id and how its capture queue overflows."""

    id: str = Field(pattern=STREAM_ID_PATTERN)
    """Letters, digits, ``_`` and ``-``; used in topics (``detections.<id>``)."""
    source: SourceConfig
    queue_policy: OverflowPolicy | None = None
    """``drop_oldest`` for live sources and ``block`` for files unless set."""
    queue_size: int | None = Field(None, ge=1, le=1024)
    """Frames the capture queue holds: 1 for live sources unless set (only the newest frame waits for the model,
    so latency is set by the model, not by a queue), 2 for files (decoding runs ahead while the model works)."""
    max_frames: int | None = Field(None, ge=1)
    """Stop the stream after this many frames."""
    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []
    privacy: PrivacyConfig = PrivacyConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    preprocess: list[ImageOpConfig] = []
    """Image operations before inference, in order (see pipeline/imageops.py); results stay in frame pixels."""
    motion: MotionConfig | None = None
    """Motion gating: off unless present."""

    @property
    def supervised(self) -> bool:
        """Cameras and network streams reconnect; files, folders and generated scenes end."""
        return self.reconnect.enabled and isinstance(self.source, (WebcamSourceConfig, UrlSourceConfig))

    @field_validator("source", mode="before")
    @classmethod
    def _source_shorthand(cls, value: Any) -> Any:
        return parse_source(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_region_names(self) -> StreamConfig:
        names = [r.name for r in (*self.lines, *self.zones)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stream '{self.id}': line/zone name '{dupes[0]}' is used twice")
        return self

    @property
    def policy(self) -> OverflowPolicy:
        if self.queue_policy is not None:
            return self.queue_policy
        return OverflowPolicy.DROP_OLDEST if self.source.live else OverflowPolicy.BLOCK

    @property
    def capacity(self) -> int:
        """The capture queue's size: ``queue_size``, else 1 for live sources and 2 for the others."""
        if self.queue_size is not None:
            return self.queue_size
        return 1 if self.source.live else 2
