"""A lazy registry of inference backends with a logged fallback ladder.

Backends are named by import path and imported only when chosen, so a box
without TensorRT or ONNX Runtime never imports them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from engines.base import DetectionEngine, ModelSpec
from pipeline.errors import BackendUnavailable, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BackendEntry:
    name: str
    loader: str
    """``module:function`` taking a :class:`ModelSpec` and returning a :class:`DetectionEngine`."""


BACKENDS: dict[str, BackendEntry] = {
    "torch": BackendEntry("torch", "engines.torch_backend:load"),
}

AUTO_ORDER: tuple[str, ...] = ("torch",)
"""The order ``engine: auto`` tries backends in."""


def _loader(entry: BackendEntry) -> Callable[[ModelSpec], DetectionEngine]:
    module_name, func = entry.loader.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend '{entry.name}' is not installed ({exc})") from exc
    loader: Callable[[ModelSpec], DetectionEngine] = getattr(module, func)
    return loader


def load_engine(spec: ModelSpec, backend: str = "auto") -> DetectionEngine:
    """Load ``spec`` with ``backend``, or with the first backend of :data:`AUTO_ORDER` that works.

    A backend that cannot run here (:class:`BackendUnavailable`) is logged and
    skipped; a :class:`ModelError` (missing file, wrong task) stops the ladder,
    since no other backend would fix it.
    """
    if backend != "auto":
        if backend not in BACKENDS:
            raise ModelError(f"unknown engine '{backend}' (known: auto, {', '.join(BACKENDS)})")
        return _loader(BACKENDS[backend])(spec)
    rejected: list[str] = []
    for name in AUTO_ORDER:
        try:
            engine = _loader(BACKENDS[name])(spec)
        except BackendUnavailable as exc:
            rejected.append(f"{name}: {exc}")
            log.info("engine auto: rejected %s", rejected[-1])
            continue
        if rejected:
            engine.info = replace(engine.info, fallback_reason="; ".join(rejected))
        return engine
    raise ModelError("no inference backend could load the model: " + "; ".join(rejected))
