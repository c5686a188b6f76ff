"""The observers a configured pipeline gets once it runs: the control endpoint, metrics, health and the API over
HTTP, and the status file. Each sees the pipeline through :mod:`pipeline.view`, not the runner."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from pipeline.config import PipelineConfig
from pipeline.curve import CurveServer
from pipeline.metrics import NullMetrics, PrometheusMetrics
from pipeline.view import PipelineControl

log = logging.getLogger(__name__)


class Observer(Protocol):
    """Something that watches a running pipeline until closed."""

    def close(self) -> None: ...


def metrics_for(config: PipelineConfig) -> NullMetrics | PrometheusMetrics:
    """Prometheus metrics when ``metrics.port`` serves them, else the null object."""
    return PrometheusMetrics() if config.metrics.port is not None else NullMetrics()


def start_observers(
    pipeline: PipelineControl, config: PipelineConfig, metrics: NullMetrics | PrometheusMetrics
) -> tuple[list[Observer], int | None]:
    """Start what ``control``, ``metrics`` and ``metrics.status_file`` ask for; returns the observers (to close)
    and the port serving metrics (``metrics.port: 0`` picks a free one), ``None`` when none does."""
    observers: list[Observer] = []
    try:
        port = _start(pipeline, config, metrics, observers)
    except BaseException:
        for observer in observers:
            observer.close()
        raise
    return observers, port


def _start(
    pipeline: PipelineControl,
    config: PipelineConfig,
    metrics: NullMetrics | PrometheusMetrics,
    observers: list[Observer],
) -> int | None:
    port = None
    if config.control.endpoint is not None:
        from pipeline.control import ControlServer

        curve = config.publish.curve
        control = ControlServer(
            pipeline,
            config.control.endpoint,
            CurveServer.load(curve.server_secret, curve.clients) if curve else None,
        )
        control.start()
        observers.append(control)
        log.info("streams can be added and removed on %s", config.control.endpoint)
    m = config.metrics
    if m.port is not None:
        from pipeline.api.app import build_app
        from pipeline.api.server import ApiServer

        metrics.attach(pipeline)
        server = ApiServer(build_app(pipeline, metrics, m), m.host, m.port, "metrics")
        server.start()
        observers.append(server)
        port = server.port
        api = " /api/v1 /docs" if m.api is not None and m.api.enabled else ""
        log.info("metrics and health on http://%s:%d (/metrics /healthz /readyz%s)", m.host, port, api)
    if m.status_file:
        from pipeline.health import StatusFile

        status = StatusFile(pipeline, Path(m.status_file).expanduser(), m.ready_share, m.stale_after_s)
        status.start()
        observers.append(status)
    return port
