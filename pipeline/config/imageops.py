"""Image operations before the model (crop, rotate, flip, resize, undistort, enhance), in order."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.config.base import (
    _Strict,
)


class CropOp(_Strict):
    """Keep a region: ``x, y, width, height`` as fractions of the frame (all ≤ 1) or pixels."""

    op: Literal["crop"]
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)


class RotateOp(_Strict):
    """Rotate clockwise (a camera mounted sideways or upside down)."""

    op: Literal["rotate"]
    degrees: Literal[90, 180, 270]


class FlipOp(_Strict):
    op: Literal["flip"]
    axis: Literal["horizontal", "vertical", "both"] = "horizontal"


class ResizeOp(_Strict):
    """Scale to ``width`` × ``height``; give one to keep the aspect ratio."""

    op: Literal["resize"]
    width: int | None = Field(None, ge=16, le=16384)
    height: int | None = Field(None, ge=16, le=16384)

    @model_validator(mode="after")
    def _one_side(self) -> ResizeOp:
        if self.width is None and self.height is None:
            raise ValueError("resize needs width, height or both")
        return self


class UndistortOp(_Strict):
    """Lens undistortion from an OpenCV calibration file (``camera_matrix`` and ``dist_coeffs``)."""

    op: Literal["undistort"]
    calibration: str


class ClaheOp(_Strict):
    op: Literal["clahe"]
    clip_limit: float = Field(2.0, gt=0, le=40)
    tile: int = Field(8, ge=1, le=64)


class GammaOp(_Strict):
    """``value`` > 1 lifts shadows (low light); < 1 darkens."""

    op: Literal["gamma"]
    value: float = Field(gt=0.1, le=5.0)


class DenoiseOp(_Strict):
    op: Literal["denoise"]
    strength: float = Field(5.0, gt=0, le=20)


class GrayscaleOp(_Strict):
    op: Literal["grayscale"]


ImageOpConfig = Annotated[
    CropOp | RotateOp | FlipOp | ResizeOp | UndistortOp | ClaheOp | GammaOp | DenoiseOp | GrayscaleOp,
    Field(discriminator="op"),
]
GEOMETRIC_OPS = frozenset({"crop", "rotate", "flip", "resize", "undistort"})
