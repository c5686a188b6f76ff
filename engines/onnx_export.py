"""ONNX export through Ultralytics' exporter, cached by model hash.

The ONNX runtime backend loads the export directly; the TensorRT backend
compiles it. Exports of architecture-only models (random weights, nothing on
disk to hash) are not cached: they go to a temporary folder.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.engine_cache import CachedArtifact, CacheKey, EngineCache
from engines.errors import BackendUnavailable, ModelError
from engines.weights import LoadedModel, file_sha256

log = logging.getLogger(__name__)

ONNX_EXTRA = "pip install onnx"


def require_onnx() -> None:
    """Fail as a :class:`BackendUnavailable` (never install at run time) when the ``onnx`` package is missing."""
    if importlib.util.find_spec("onnx") is None:
        raise BackendUnavailable(f"exporting to ONNX needs the 'onnx' package ({ONNX_EXTRA})")


def export_key(loaded: LoadedModel, *, dynamic: bool, imgsz: int, batch: int) -> CacheKey:
    import torch
    import ultralytics

    assert loaded.path is not None
    return CacheKey(
        stem=Path(loaded.name).stem,
        suffix=".onnx",
        fields={
            "model_sha256": file_sha256(loaded.path),
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__.split("+")[0],
            "dynamic": dynamic,
            "imgsz": imgsz,
            "batch": batch,
        },
    )


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    """The exporter logs a banner of next steps for its own CLI; keep only its warnings."""
    ul = logging.getLogger("ultralytics")
    level = ul.level
    ul.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ul.setLevel(level)


def _export(module: Any, dest: Path, *, dynamic: bool, imgsz: int, batch: int) -> None:
    from ultralytics.engine.exporter import Exporter

    with tempfile.TemporaryDirectory(prefix="edgesight-export-") as tmp, _quiet_ultralytics():
        model = copy.deepcopy(module)  # the exporter fuses and flags the module in place
        model.pt_path = str(Path(tmp) / "model.pt")  # the exporter writes next to this path
        args = {"format": "onnx", "imgsz": imgsz, "dynamic": dynamic, "simplify": False, "batch": batch}
        try:
            out = Exporter(overrides={**args, "device": "cpu", "verbose": False})(model=model)
        except Exception as exc:
            raise ModelError(f"ONNX export failed: {type(exc).__name__}: {exc}".split("\n")[0]) from exc
        shutil.move(out, dest)


def export_onnx(
    loaded: LoadedModel, cache_dir: Path, *, dynamic: bool, imgsz: int, batch: int = 1
) -> tuple[Path, CachedArtifact | None]:
    """An ONNX file for ``loaded``: from the cache, freshly exported into it, or (architectures) into a temp dir.

    ``dynamic`` makes batch, height and width dynamic; otherwise the input is
    ``batch × 3 × imgsz × imgsz``.
    """
    require_onnx()
    if loaded.path is None:
        tmp = Path(tempfile.mkdtemp(prefix="edgesight-onnx-"))
        dest = tmp / (Path(loaded.name).stem + ".onnx")
        _export(loaded.module, dest, dynamic=dynamic, imgsz=imgsz, batch=batch)
        return dest, None
    key = export_key(loaded, dynamic=dynamic, imgsz=imgsz, batch=batch)
    cache = EngineCache(cache_dir)
    found = cache.lookup(key)
    if found is not None:
        return found.path, found
    log.info("exporting %s to ONNX (once; cached in %s)", loaded.name, cache_dir)
    stored = cache.store(key, lambda tmp: _export(loaded.module, tmp, dynamic=dynamic, imgsz=imgsz, batch=batch))
    return stored.path, stored
