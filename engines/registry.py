"""A lazy registry of inference backends with a logged fallback ladder.

Backends are named by import path and imported only when tried, so a box
without TensorRT or ONNX Runtime never imports them. ``engine: auto`` walks
:func:`auto_ladder` (tensorrt → torch on CUDA → onnxruntime → torch on the
CPU), logs why each rung was passed over, and reports that reason in the
engine's info (startup log and first ``status`` message).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from engines.base import DetectionEngine, ModelSpec
from engines.errors import BackendUnavailable, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BackendEntry:
    name: str
    loader: str
    """``module:function`` taking a :class:`ModelSpec` and returning a :class:`DetectionEngine`."""


BACKENDS: dict[str, BackendEntry] = {
    "tensorrt": BackendEntry("tensorrt", "engines.tensorrt_backend:load"),
    "torch": BackendEntry("torch", "engines.torch_backend:load"),
    "onnxruntime": BackendEntry("onnxruntime", "engines.onnxruntime_backend:load"),
}


MODELS_WITH_OWN_RUNTIME: dict[str, BackendEntry] = {
    "mtcnn": BackendEntry("mtcnn", "engines.mtcnn_backend:load"),
}
"""Models that run only through their own library (``model: mtcnn``), whatever ``engine`` says."""


def auto_ladder(device: str) -> list[tuple[str, str]]:
    """``(backend, device)`` rungs that ``engine: auto`` tries, best first, for the configured device."""
    gpu = [("tensorrt", "cuda"), ("torch", "cuda")]
    cpu = [("onnxruntime", "cpu"), ("torch", "cpu")]
    if device == "cuda":
        return [*gpu, ("onnxruntime", "cuda")]
    if device == "cpu":
        return cpu
    return gpu + cpu


def _loader(entry: BackendEntry) -> Callable[[ModelSpec], DetectionEngine]:
    module_name, func = entry.loader.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"not installed ({exc})") from exc
    loader: Callable[[ModelSpec], DetectionEngine] = getattr(module, func)
    return loader


def load_engine(spec: ModelSpec, backend: str = "auto") -> DetectionEngine:
    """Load ``spec`` with ``backend``, or (``auto``) with the first rung of :func:`auto_ladder` that loads.

    A rung that cannot run here (:class:`BackendUnavailable`) or fails while
    loading is logged and skipped; each loader releases what it opened before
    raising. A :class:`ModelError` (missing file, wrong task) stops the ladder,
    since no other backend would fix it. A named backend gets no fallback.
    """
    own = MODELS_WITH_OWN_RUNTIME.get(spec.model.lower())
    if own is not None:
        if backend not in ("auto", "torch"):
            raise ModelError(f"model '{spec.model}' runs through torch only, not engine '{backend}'")
        return _loader(own)(spec)
    if backend != "auto":
        if backend not in BACKENDS:
            raise ModelError(f"unknown engine '{backend}' (known: auto, {', '.join(BACKENDS)})")
        try:
            return _loader(BACKENDS[backend])(spec)
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"engine '{backend}' cannot run here: {exc}") from exc
    rejected: list[str] = []
    for name, device in auto_ladder(spec.device):
        rung = f"{name}-{device}"
        try:
            engine = _loader(BACKENDS[name])(replace(spec, device=device))  # type: ignore[arg-type]
        except ModelError:
            raise
        except BackendUnavailable as exc:
            rejected.append(f"{rung}: {exc}")
            log.info("engine auto: skipped %s", rejected[-1])
            continue
        except Exception as exc:  # a backend that breaks while loading: fall back, once, at start-up
            rejected.append(f"{rung}: failed to load ({type(exc).__name__}: {exc})".split("\n")[0])
            log.warning("engine auto: %s; falling back", rejected[-1])
            log.debug("%s failed to load", rung, exc_info=True)
            continue
        if rejected:
            engine.info = replace(engine.info, fallback_reason="; ".join(rejected))
        return engine
    raise ModelError("no inference backend could load the model: " + "; ".join(rejected))


def check_model(model: str) -> None:
    """Raise the :class:`ModelError` loading ``model`` would for a name or file that is not there (loads nothing)."""
    if model.lower() in MODELS_WITH_OWN_RUNTIME:
        return
    from engines.weights import check_model_file

    check_model_file(model)
