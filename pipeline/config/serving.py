"""Where results and state go: the bus, its encryption, metrics and health, the preview, the control endpoint."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipeline.config.base import (
    DEFAULT_ENDPOINT,
    _Strict,
)


class MasksConfig(_Strict):
    """How segmentation models' instance masks are published (see the detections schema)."""

    polygon: bool = True
    """Each detection's mask as one closed polygon in source pixels."""
    rle: bool = False
    """Also as COCO run-length encoding (exact, larger)."""
    tolerance_px: float = Field(0.5, ge=0.0, le=50.0)
    """Polygon simplification: no outline point moves more than this many source pixels (0: every vertex)."""


class CurveConfig(_Strict):
    """CurveZMQ: encrypt the bus and admit only known subscribers (keys from ``edgesight keys generate``)."""

    server_secret: Path
    """The publisher's ``.key_secret`` file."""
    clients: Path
    """A folder of the allowed subscribers' public ``.key`` files."""


class PublishConfig(_Strict):
    """Where and how results go out over ZeroMQ."""

    endpoint: str = Field(DEFAULT_ENDPOINT, pattern=r"^(tcp|ipc|inproc)://")
    """Where results are published (bound): ``tcp://host:port``, ``ipc://path``."""
    wait_for_subscriber: bool = False
    """Hold the first message until a subscriber has connected, then never drop (back-pressure instead)."""
    subscriber_timeout_s: float | None = Field(None, gt=0)
    """Give up waiting for a subscriber after this long (``None``: wait until stopped)."""
    send_hwm: int = Field(1000, ge=1)
    """Messages queued for slow subscribers before new ones are dropped (counted)."""
    masks: MasksConfig = MasksConfig()
    curve: CurveConfig | None = None
    """Off by default (the default endpoint is loopback); set it before binding to a network address."""


class MetricsConfig(_Strict):
    """Prometheus metrics, health and readiness over HTTP, and a status file (see pipeline/health.py)."""

    port: int | None = Field(None, ge=0, le=65535)
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` here (``None``: off; 0: any free port)."""
    host: str = "127.0.0.1"
    """Address the endpoints listen on (loopback unless set)."""
    """Bind address; ``0.0.0.0`` for a scraper on another machine."""
    ready_share: float = Field(1.0, ge=0.0, le=1.0)
    """``/readyz`` answers 200 once this share of the streams is online."""
    stale_after_s: float = Field(10.0, gt=0)
    """``/healthz`` fails when a processing stage has not gone round its loop for this long."""
    status_file: str | None = None
    """Write health and readiness as JSON here every 5 s (for ``edgesight health`` in container checks)."""


class PreviewConfig(_Strict):
    """The browser preview: annotated MJPEG per stream (privacy redaction applies)."""

    port: int | None = Field(None, ge=0, le=65535)
    """Serve the page here (``None``: off; 0: any free port)."""
    host: str = "127.0.0.1"
    """Address the preview listens on (loopback unless set)."""
    max_fps: float = Field(10.0, gt=0, le=120)
    """Frames per second sent to each viewer at most."""
    processed: bool = False
    """Show each stream after its ``preprocess`` operations (rotated, cropped, enhanced: what the model saw), with
    the overlays drawn where they land there; ``False``: the camera's own frame."""


class ControlConfig(_Strict):
    """Streams added, removed and listed at run time (``edgesight streams …``), over ZeroMQ REQ/REP."""

    endpoint: str | None = Field(None, pattern=r"^(tcp|ipc|inproc)://")
    """Where the pipeline answers (``None``: off). With ``publish.curve``, the same keys guard it."""
