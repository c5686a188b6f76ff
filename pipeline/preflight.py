"""What ``edgesight check`` verifies beyond the schema: what ``run`` would refuse at start-up.

Each check calls what start-up itself calls, so both fail for the same reasons,
mostly with the same one-line messages: sources that start-up opens are opened
and released (files and image folders; cameras and streams that reconnect are
left alone, start-up does not wait for them either), model names and files
resolve (nothing is loaded or downloaded), face galleries and embedder weights
exist, image operations build (lens calibration files), CurveZMQ keys load, and
the ports to bind are free: HTTP ports bound by the server start-up uses,
ZeroMQ endpoints by a throwaway socket, all held at once (so two settings that
name the same port are caught too) and released at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import EdgesightError, PublishError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing start-up would refuse: the config key it comes from and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


Check = Callable[[contextlib.ExitStack], object]
"""Raises :class:`EdgesightError` for a problem; may keep a port bound until the stack closes."""


def preflight(config: PipelineConfig) -> list[Problem]:
    """Every problem start-up would meet with ``config`` on this machine, in config order (empty: none)."""
    problems = []
    with contextlib.ExitStack() as held:
        for where, check in _checks(config):
            try:
                check(held)
            except EdgesightError as exc:
                problems.append(Problem(where, str(exc)))
    return problems


def _call(fn: Callable[..., object], *args: Any) -> Check:
    """A check that holds nothing: ``fn(*args)``."""
    return lambda _held: fn(*args)


def _hold(fn: Callable[..., object], *args: Any) -> Check:
    """A check that may hold what it bound: ``fn(held, *args)``."""
    return lambda held: fn(held, *args)


def _checks(config: PipelineConfig) -> Iterator[tuple[str, Check]]:
    yield from _stream_checks(config)
    yield from _model_checks(config)
    yield from _bind_checks(config)


def _stream_checks(config: PipelineConfig) -> Iterator[tuple[str, Check]]:
    from pipeline.imageops import build_ops
    from pipeline.sources import probe_source

    for i, stream in enumerate(config.streams):
        if not stream.supervised:  # a camera or stream that reconnects is connected in its own thread, later
            yield f"streams[{i}].source", _call(probe_source, stream.source)
        if stream.preprocess:
            yield f"streams[{i}].preprocess", _call(build_ops, stream.preprocess)


def _model_checks(config: PipelineConfig) -> Iterator[tuple[str, Check]]:
    from engines.registry import check_model
    from pipeline.faces.embedder import check_embedder
    from pipeline.faces.stage import enrolled_gallery
    from pipeline.secondary import check_crop_model

    if config.model.path:  # unset: the default, with the bundled model when it cannot be downloaded
        yield "model.path", _call(check_model, config.model.path)
    faces = config.faces
    if faces is not None and faces.detector:
        yield "faces.detector", _call(check_model, faces.detector)
    if faces is not None and faces.recognize:
        yield "faces.weights", _call(check_embedder, faces.weights)
        yield "faces.gallery", _call(enrolled_gallery, faces.gallery)
    for i, secondary in enumerate(config.secondary):
        where = f"secondary[{i}]" if secondary.kind == "ocr" else f"secondary[{i}].model"
        yield where, _call(check_crop_model, secondary)


def _bind_checks(config: PipelineConfig) -> Iterator[tuple[str, Check]]:
    publish = config.publish
    yield "publish.endpoint", _hold(_hold_endpoint, publish.endpoint)
    if publish.curve is not None:
        from pipeline.curve import CurveServer

        yield "publish.curve", _call(CurveServer.load, publish.curve.server_secret, publish.curve.clients)
    if config.control.endpoint is not None:
        yield "control.endpoint", _hold(_hold_endpoint, config.control.endpoint)
    m, p = config.metrics, config.preview
    if m.port:  # 0: any free port
        yield "metrics.port", _hold(_hold_port, m.host, m.port, "metrics")
    if p.port:
        yield "preview.port", _hold(_hold_port, p.host, p.port, "preview")


def _hold_endpoint(held: contextlib.ExitStack, endpoint: str) -> None:
    """Bind ``endpoint`` as start-up will (a ZeroMQ socket) and keep it until the checks end."""
    import zmq

    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    sock.linger = 0
    held.callback(sock.close)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise PublishError(f"cannot bind '{endpoint}': {exc.strerror}") from exc


def _hold_port(held: contextlib.ExitStack, host: str, port: int, what: str) -> None:
    """Bind ``host:port`` with the server start-up will use, not serving, until the checks end."""
    from pipeline.httpserver import HttpServer

    held.callback(HttpServer(host, port, lambda _: None, what).close)
