"""Typed, frozen messages that cross the pipeline's queues.

Every queue carries exactly one of these types, plus the :class:`EndOfStream`
sentinel. Shapes are checked once, when a message is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesight_client.schema import Detection
from engines.masks import InstanceMasks
from engines.yuv import PixelLayout, check_i420, i420_size, on_host, to_bgr


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame from a source: BGR (a NumPy array, or a CUDA tensor when decoded on the GPU), or planar
    I420 straight from a CPU decoder (``layout``; see :mod:`engines.yuv`)."""

    stream_id: str
    frame_index: int
    pts_ms: float
    captured_at: float
    image: np.ndarray = field(repr=False)
    layout: PixelLayout = "bgr"

    def __post_init__(self) -> None:
        img = self.image
        if isinstance(img, np.ndarray):
            if img.dtype != np.uint8:
                raise TypeError(f"{self._where()}: image must be a uint8 array")
        elif str(getattr(img, "dtype", "")) != "torch.uint8":  # a CUDA frame from the GPU decoder
            raise TypeError(f"{self._where()}: image must be a uint8 array or tensor")
        if self.layout == "i420":
            problem = check_i420(tuple(img.shape))
            if problem:
                raise ValueError(f"{self._where()}: {problem}")
        elif img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"{self._where()}: expected an HxWx3 BGR image, got shape {tuple(img.shape)}")

    def _where(self) -> str:
        return f"frame {self.frame_index} of '{self.stream_id}'"

    def host_image(self) -> np.ndarray:
        """The picture as a BGR NumPy array (copied from the GPU, or converted from I420, when need be)."""
        return on_host(to_bgr(self.image, self.layout))

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        rows = int(self.image.shape[0])
        return i420_size(rows, self.width)[0] if self.layout == "i420" else rows


@dataclass(frozen=True, slots=True)
class SeenImage:
    """What the model saw of a frame after its stream's image operations, and how frame points land in it
    (secondary models crop from this picture: a sideways camera's plate is read upright)."""

    image: Any = field(repr=False)
    """A BGR ``uint8`` array, or a CUDA tensor when the operations ran on the GPU."""
    to_view: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    def host_image(self) -> np.ndarray:
        """The picture as a NumPy array (copied from the GPU when the operations ran there)."""
        return on_host(self.image)


@dataclass(frozen=True, slots=True)
class PreparedFrame:
    """A frame plus the engine's model input built from it (letterboxed, normalized).

    With image operations (``preprocess``), the model saw an ``input_shape`` image and
    ``to_original`` maps its points back to the frame.
    """

    frame: Frame
    model_input: Any = field(repr=False)
    input_shape: tuple[int, int] | None = None
    to_original: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    gated: str | None = None
    """Motion gating found the frame still: ``reuse`` (publish the last detections again) or ``skip``; it has no
    model input then."""
    seen: SeenImage | None = None
    """With image operations: the operated-on picture (kept for secondary models)."""

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width of the image the model saw."""
        return self.input_shape or (self.frame.height, self.frame.width)

    @property
    def stream_id(self) -> str:
        return self.frame.stream_id


@dataclass(frozen=True, slots=True)
class MaskFormat:
    """How instance masks go on the wire: a polygon (simplified to ``tolerance_px``) and/or COCO RLE."""

    polygon: bool = True
    rle: bool = False
    tolerance_px: float = 0.5


def _pick(items: Sequence[Any], keep: np.ndarray) -> tuple[Any, ...]:
    """``items[keep]`` for a boolean mask or an index array, as NumPy would select rows."""
    keep = np.asarray(keep)
    index = np.flatnonzero(keep) if keep.dtype == bool else keep.reshape(-1)
    return tuple(items[int(i)] for i in index)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The detections found in one frame, ready to publish.

    They travel as one ``(N, 6)`` float32 array (``x1, y1, x2, y2, confidence,
    class_id`` in frame pixels, confidences in [0, 1]) with the model's labels:
    at hundreds of frames a second, building one Python object per box costs
    more than the model. :attr:`detections` gives them as :class:`Detection`.
    """

    frame: Frame
    boxes: np.ndarray = field(repr=False)
    labels: Mapping[int, str] = field(repr=False)
    infer_ms: float = 0.0
    landmarks: np.ndarray | None = field(default=None, repr=False)
    """``(N, K, 2)`` keypoints per box in frame pixels (face models: eyes, nose, mouth corners), or ``None``."""
    masks: InstanceMasks | None = field(default=None, repr=False)
    """Segmentation models: one instance mask per box."""
    reused: bool = False
    """Motion gating: the model did not see this still frame; these are the stream's last detections."""
    keypoints: np.ndarray | None = field(default=None, repr=False)
    """Pose models: ``(N, K, 3)`` keypoints per box, ``x, y, confidence`` in frame pixels."""
    attributes: tuple[Mapping[str, Any], ...] | None = field(default=None, repr=False)
    """Per box, what secondary models added (``classes``, ``text``, …)."""
    frame_attributes: Mapping[str, Any] | None = field(default=None, repr=False)
    """What secondary models said of the whole frame (``classes``)."""
    seen: SeenImage | None = field(default=None, repr=False)
    """With image operations: the picture the model saw (secondary models crop from it)."""

    def __post_init__(self) -> None:
        b = self.boxes
        if not isinstance(b, np.ndarray) or b.ndim != 2 or b.shape[1] != 6:
            raise ValueError(f"boxes must be an (N, 6) array, got {getattr(b, 'shape', type(b))}")
        lm = self.landmarks
        if lm is not None and (lm.ndim != 3 or lm.shape[0] != b.shape[0] or lm.shape[2] != 2):
            raise ValueError(f"landmarks must be an (N, K, 2) array for N = {b.shape[0]}, got {lm.shape}")
        if self.masks is not None and len(self.masks) != b.shape[0]:
            raise ValueError(f"masks: {len(self.masks)} masks for {b.shape[0]} boxes")

    @classmethod
    def from_rows(
        cls,
        frame: Frame,
        rows: np.ndarray,
        labels: Mapping[int, str],
        infer_ms: float = 0.0,
        masks: InstanceMasks | None = None,
        keypoints: np.ndarray | None = None,
    ) -> FrameResult:
        """A result from an engine's rows: ``x1, y1, x2, y2, confidence, class_id``, then landmark x, y pairs if any.

        Confidences are clipped to [0, 1].
        """
        rows = np.array(rows, dtype=np.float32, copy=True)
        if rows.ndim != 2 or rows.shape[1] < 6:
            rows = rows.reshape(-1, 6) if rows.size == 0 else rows
        rows[:, 4] = np.clip(rows[:, 4], 0.0, 1.0)
        extra = rows.shape[1] - 6  # face models append their landmarks, x and y each
        landmarks = rows[:, 6:].reshape(len(rows), extra // 2, 2) if extra >= 2 else None
        return cls(frame, np.ascontiguousarray(rows[:, :6]), labels, infer_ms, landmarks, masks, False, keypoints)

    def subset(self, keep: np.ndarray) -> FrameResult:
        """The same frame with only the rows ``keep`` selects."""
        landmarks = None if self.landmarks is None else self.landmarks[keep]
        masks = None if self.masks is None else self.masks.subset(keep)
        keypoints = None if self.keypoints is None else self.keypoints[keep]
        attributes = None if self.attributes is None else _pick(self.attributes, keep)
        return FrameResult(
            self.frame,
            self.boxes[keep],
            self.labels,
            self.infer_ms,
            landmarks,
            masks,
            self.reused,
            keypoints,
            attributes,
            self.frame_attributes,
            self.seen,
        )

    @property
    def stream_id(self) -> str:
        return self.frame.stream_id

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def detections(self) -> tuple[Detection, ...]:
        return tuple(
            Detection(int(c), self.labels.get(int(c), str(int(c))), conf, (x1, y1, x2, y2))
            for x1, y1, x2, y2, conf, c in self.boxes.tolist()
        )

    def detections_json(
        self,
        track_ids: np.ndarray | None = None,
        masks: MaskFormat | None = None,
        annotations: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The boxes as the ``detections`` list of the message schema (rounded as :meth:`Detection.to_json`).

        With ``track_ids`` (one per row; negative for none) each detection also carries ``track_id``;
        with masks, ``polygon`` and/or ``rle`` as ``masks`` asks; ``annotations`` (one mapping per row)
        adds keys such as a face's ``identity``.
        """
        if not len(self):
            return []
        coords = np.round(self.boxes[:, :4].astype(np.float64), 2).tolist()
        confs = np.round(self.boxes[:, 4].astype(np.float64), 6).tolist()
        ids = self.boxes[:, 5].astype(np.int64).tolist()
        labels = self.labels
        out = [
            {"class_id": c, "label": labels.get(c, str(c)), "confidence": p, "box": box}
            for c, p, box in zip(ids, confs, coords, strict=True)
        ]
        if track_ids is not None:
            for item, tid in zip(out, track_ids.tolist(), strict=True):
                item["track_id"] = tid if tid >= 0 else None
        if self.landmarks is not None:
            for item, points in zip(out, np.round(self.landmarks.astype(np.float64), 2).tolist(), strict=True):
                item["landmarks"] = points
        if self.masks is not None:
            fmt = masks or MaskFormat()
            if fmt.polygon:
                for item, polygon in zip(out, self.masks.polygons(fmt.tolerance_px), strict=True):
                    item["polygon"] = polygon
            if fmt.rle:
                for item, rle in zip(out, self.masks.rle(), strict=True):
                    item["rle"] = rle
        if self.keypoints is not None:
            kp = np.round(self.keypoints.astype(np.float64), 2).tolist()
            for item, points in zip(out, kp, strict=True):
                item["keypoints"] = points
        if self.attributes is not None:
            for item, attrs in zip(out, self.attributes, strict=True):
                item.update(attrs)
        if annotations is not None:
            for item, extra in zip(out, annotations, strict=True):
                item.update(extra)
        return out


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """Sentinel sent by a capture thread when its stream ends; every stage forwards it.

    ``error`` is ``None`` for a normal end (file finished, frame limit reached,
    pipeline stopped) and a one-line description when the source failed.
    """

    stream_id: str
    frames: int
    error: str | None = None
    stopped: bool = False


CaptureItem = Frame | EndOfStream
"""What a capture queue holds: a stream's frames, then its end."""
PreparedItem = PreparedFrame | EndOfStream
"""What the model's input queue holds (a still frame motion gating kept from the model is a PreparedFrame too)."""
ResultItem = FrameResult | EndOfStream
"""What the results queues hold, on the way to the publish stage."""
