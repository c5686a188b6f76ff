"""Turning a ``--model`` argument into loadable Ultralytics weights."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.errors import ModelError

log = logging.getLogger(__name__)


class DownloadError(ModelError):
    """An Ultralytics asset is not on disk and could not be downloaded."""


WEIGHT_SUFFIXES = (".pt",)
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED = {"edgesight-det": "edgesight-det.pt", "edgesight-seg": "edgesight-seg.pt"}
"""Models trained by the project on generated street scenes (see engines/bundled/MODEL_CARD.md)."""
ARCHITECTURE_SUFFIXES = (".yaml", ".yml")


def _is_bare_name(model: str) -> bool:
    return "/" not in model and "\\" not in model


def find_weights(model: str) -> Path | None:
    """The local file ``model`` names, or ``None`` for an Ultralytics asset that is not here yet (to download).

    Looks where Ultralytics does (the working directory, then its weights folder) and never touches the network:
    a name that is neither a file nor a known asset fails at once.
    """
    if model in BUNDLED:
        return BUNDLED_DIR / BUNDLED[model]
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise ModelError(f"model path is not a file: '{model}'")
    if not _is_bare_name(model) or path.suffix not in WEIGHT_SUFFIXES:
        raise ModelError(f"model file not found: '{model}'")
    from ultralytics.utils import SETTINGS

    saved = Path(SETTINGS["weights_dir"]) / model
    if saved.is_file():
        return saved
    if is_ultralytics_asset(model):
        return None
    raise ModelError(f"model file not found: '{model}' (and no bundled model or Ultralytics asset has that name)")


def is_ultralytics_asset(name: str) -> bool:
    """Whether Ultralytics publishes weights under ``name`` (``yolo11n.pt``; ``yolov5s.pt`` as its ``yolov5su.pt``)."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    if name in GITHUB_ASSETS_NAMES:
        return True
    from ultralytics.utils.checks import check_yolov5u_filename

    return check_yolov5u_filename(name) in GITHUB_ASSETS_NAMES


def resolve_weights(model: str) -> Path:
    """Return a local path for ``model``.

    ``edgesight-det`` and ``edgesight-seg`` name the bundled models. A local
    path always works. A known Ultralytics asset name (``yolo11n.pt``) that is
    not on disk is downloaded the way Ultralytics does it; offline, the error
    says so and how to point at a local file.
    """
    local = find_weights(model)
    if local is not None:
        return local
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        local = Path(attempt_download_asset(model))
    except Exception as exc:  # Ultralytics raises ConnectionError, FileNotFoundError or others here
        raise DownloadError(
            f"model '{model}' is not a local file and could not be downloaded ({type(exc).__name__}; offline?): "
            f"download it on a connected machine and pass its path, e.g. --model /path/to/{model}"
        ) from exc
    if not local.is_file():
        raise DownloadError(f"model '{model}' could not be downloaded (offline?): pass the path of a local copy")
    return local


def check_architecture(model: str) -> None:
    """Raise :class:`ModelError` unless ``model`` is a local ``.yaml`` file or one Ultralytics ships (any scale)."""
    if Path(model).expanduser().is_file():
        return
    from ultralytics.utils.checks import check_yaml

    unscaled = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", model)  # yolo11x.yaml -> yolo11.yaml, as Ultralytics reads it
    if not (check_yaml(model, hard=False) or check_yaml(unscaled, hard=False)):
        raise ModelError(f"model architecture not found: '{model}' (not a local file or an Ultralytics model .yaml)")


def check_model_file(model: str) -> None:
    """Raise the :class:`ModelError` loading ``model`` would for weights or an architecture that are not there.

    Loads and downloads nothing: a known Ultralytics asset passes (it is downloaded at start-up).
    """
    if model.endswith(ARCHITECTURE_SUFFIXES):
        check_architecture(model)
    else:
        find_weights(model)


TASKS = ("detect", "segment", "pose")
"""Ultralytics tasks the pipeline runs: boxes, boxes with instance masks, boxes with keypoints."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A detection or segmentation ``nn.Module`` with its display name and the weights file it came from."""

    module: Any
    name: str
    path: Path | None
    """``None`` for an architecture with random weights (nothing on disk identifies them)."""
    task: str = "detect"


def load_detection_module(model: str, fallback: str | None = None) -> LoadedModel:
    """Load a detection or segmentation ``nn.Module`` from ``.pt`` weights or an architecture ``.yaml``.

    ``fallback`` is loaded instead when ``model`` is an asset that cannot be downloaded.
    """
    from ultralytics.nn.tasks import load_checkpoint

    if model.endswith(ARCHITECTURE_SUFFIXES):
        check_architecture(model)
        module = build_architecture(model)
        return LoadedModel(module, Path(model).name, None, _task_of(module))
    try:
        path = resolve_weights(model)
    except DownloadError as exc:
        if fallback is None:
            raise
        log.warning("%s; using the bundled '%s' instead (trained on generated scenes only)", exc, fallback)
        model, path = fallback, resolve_weights(fallback)
    try:
        module, _ = load_checkpoint(str(path), device="cpu")
    except Exception as exc:
        log.debug("loading '%s' failed", model, exc_info=True)
        raise ModelError(
            f"cannot load model '{model}': not a valid Ultralytics .pt file (empty, truncated, corrupt or not a model)"
        ) from exc
    task = getattr(module, "task", None) or _task_of(module)
    if task not in TASKS:
        raise ModelError(f"model '{model}' is a '{task}' model; this pipeline runs {', '.join(TASKS)} models")
    return LoadedModel(module, path.name, path, task)


def build_architecture(model: str) -> Any:
    """An architecture-only model (random weights) from an Ultralytics YAML name or file."""
    from ultralytics import YOLO

    try:
        yolo = YOLO(model)
    except Exception as exc:
        raise ModelError(
            f"cannot build model architecture '{model}' ({type(exc).__name__}: {exc})".split("\n")[0]
        ) from exc
    if yolo.task not in TASKS:
        raise ModelError(
            f"model '{model}' is a '{yolo.task}' architecture; this pipeline runs {', '.join(TASKS)} models"
        )
    log.warning("model '%s' is an architecture only: its weights are random, so are its detections", model)
    module: Any = yolo.model
    names = coco_names()
    if len(module.names) == len(names):
        module.names = names
    return module


@functools.lru_cache(maxsize=1)
def coco_names() -> dict[int, str]:
    """The 80 COCO class names, as Ultralytics ships them."""
    from ultralytics.utils import ROOT, YAML

    names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    return {int(k): str(v) for k, v in names.items()}


def _task_of(module: Any) -> str:
    from ultralytics.nn.tasks import guess_model_task

    try:
        return str(guess_model_task(module))
    except Exception:
        return "unknown"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (engine cache keys)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
