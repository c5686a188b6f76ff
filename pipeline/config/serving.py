"""Where results and state go: the bus, its encryption, metrics and health, the preview, the control endpoint."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

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


class MqttTlsConfig(_Strict):
    """TLS to the broker: its CA (the system's when unset) and, for brokers that ask, a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttConfig(_Strict):
    """Events, counts and each stream's state on an MQTT broker (paho-mqtt), beside the ZeroMQ bus.

    Topics: ``<topic_prefix>/<stream>/events`` (each event's JSON, as on the bus), ``…/counts`` (line and zone
    counts), ``…/state`` (the stream's state, retained) and ``<topic_prefix>/available`` (``online``, or
    ``offline`` as the last will). The broker never slows the pipeline: messages wait in a bounded outbox that
    drops its oldest (counted) while the broker is away, and the connection comes back with backoff.
    """

    host: str
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    """Never logged (``${NAME}`` in the YAML takes it from the environment)."""
    tls: MqttTlsConfig | None = None
    client_id: str = Field("edgesight", min_length=1, max_length=128)
    qos: Literal[0, 1, 2] = 1
    topic_prefix: str = Field("edgesight", pattern=r"^[^#+]+$")
    retain_state: bool = True
    """Keep each stream's last state on the broker for subscribers that come later."""
    discovery: bool = False
    """Announce per-stream counts and online state to Home Assistant (MQTT discovery, retained)."""
    discovery_prefix: str = "homeassistant"
    outbox: int = Field(1000, ge=1, le=1_000_000)
    """Messages waiting for the broker at most; past that the oldest are dropped (counted)."""
    drain_s: float = Field(5.0, ge=0, le=600)
    """At shutdown, how long queued messages wait for the broker before they are dropped (counted)."""
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)


class WebhookConfig(_Strict):
    """Each event POSTed as JSON to a URL, off the frame path: a bounded queue, retries with backoff."""

    url: str = Field(pattern=r"^https?://")
    """Where events go; its ``user:password@`` never appears in logs."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(3, ge=0, le=20)
    """Further attempts after a failed POST (a connection error or a 5xx answer), with doubling waits."""
    retry_wait_s: float = Field(0.5, gt=0, le=60)
    queue: int = Field(1000, ge=1, le=1_000_000)
    """Events waiting to be sent at most; past that the oldest are dropped (counted)."""
    headers: dict[str, str] = {}
    """Sent with every POST (an ``Authorization`` header, say); values never logged."""


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
    mqtt: MqttConfig | None = None
    """Events, counts and states on an MQTT broker too."""
    webhook: WebhookConfig | None = None
    """Events POSTed to an HTTP endpoint too."""


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` and ``::1``; ``0.0.0.0``, other addresses and host names are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class ApiConfig(_Strict):
    """The HTTP API under ``/api/v1`` (streams, events with their snapshots and clips, counts; OpenAPI at ``/docs``),
    served with metrics and health on ``metrics.host`` and ``metrics.port``."""

    enabled: bool = True
    token: SecretStr | None = None
    """Every ``/api/v1`` request must carry it (``Authorization: Bearer TOKEN``); required when ``metrics.host`` is
    not a loopback address. ``${NAME}`` takes it from the environment; it is never logged or echoed."""

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("at least 16 characters (`openssl rand -hex 16` makes one)")
        return token


class MetricsConfig(_Strict):
    """Prometheus metrics, health and readiness over HTTP (with ``api``, the HTTP API on the same port), and a
    status file (see pipeline/health.py and pipeline/api/)."""

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
    api: ApiConfig | None = None
    """The HTTP API on this port too (``api: {}`` on loopback; off unless present)."""

    @model_validator(mode="after")
    def _api_guarded(self) -> MetricsConfig:
        api = self.api
        if api is not None and api.enabled:
            if self.port is None:
                raise ValueError("api needs port (the API is served beside metrics and health)")
            if api.token is None and not is_loopback(self.host):
                raise ValueError(
                    f"api.token is required when host '{self.host}' is not a loopback address "
                    "(the API steers the pipeline; `${NAME}` takes the token from the environment)"
                )
        return self


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
