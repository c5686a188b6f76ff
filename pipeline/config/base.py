"""What every config model shares: unknown keys are errors, values are frozen; the defaults named in several places."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_MODEL = "yolo11n.pt"
"""The model when none is given: COCO's 80 classes, downloaded on first use."""
OFFLINE_FALLBACK_MODEL = "edgesight-det"
"""Loaded instead of :data:`DEFAULT_MODEL` where that cannot be downloaded (bundled, trained on generated scenes)."""
STREAM_ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
