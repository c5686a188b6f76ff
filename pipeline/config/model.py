"""The models: the detector, the face thread's, and the secondary models run on detections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from engines.base import ModelSpec
from pipeline.config.base import (
    DEFAULT_MODEL,
    OFFLINE_FALLBACK_MODEL,
    _Strict,
)


class ModelConfig(_Strict):
    """The detection model and its post-processing."""

    path: str | None = None
    """Local weights, a bundled name (``edgesight-det``), an Ultralytics asset name (downloaded when online) or an
    architecture ``.yaml``. Unset: ``yolo11n.pt``, or the bundled ``edgesight-det`` when that cannot be had."""
    engine: Literal["auto", "tensorrt", "torch", "onnxruntime"] = "auto"
    """``auto`` tries tensorrt → torch on CUDA → onnxruntime → torch on the CPU and reports why it passed any over."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when a GPU is usable, else the CPU."""
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    """``auto``: fp16 on a GPU, fp32 on the CPU. ``int8`` (TensorRT) needs ``calibration``."""
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32)
    """Input size (the longer side, letterboxed); a multiple of 32."""
    conf: float = Field(0.25, ge=0.0, le=1.0)
    """Lowest confidence a detection is kept at."""
    iou: float = Field(0.7, ge=0.0, le=1.0)
    """IoU above which a box is suppressed by a better one of its class (non-maximum suppression)."""
    max_det: int = Field(300, ge=1, le=10000)
    """Most detections kept per frame."""
    classes: list[int | str] | None = None
    """Keep only these classes, by id or label."""
    batch_size: int | None = Field(None, ge=1, le=64)
    """Most frames per forward pass, gathered across streams (default: one per stream, at most 32)."""
    batch_timeout_ms: float = Field(5.0, ge=0.0, le=1000.0)
    """How long the infer stage waits to fill a batch once it holds one frame (a dead camera never stalls the rest)."""
    threads: int | None = Field(None, ge=1, le=256)
    """CPU threads for inference (default: every core)."""
    cache_dir: str | None = None
    """Where ONNX exports and TensorRT engines are cached (default: ``~/.cache/edgesight/engines``)."""
    calibration: str | None = None
    """INT8 calibration frames: a folder of images or a video from the cameras the model will watch."""
    calibration_frames: int = Field(256, ge=8, le=100000)
    """Images used from ``calibration`` for int8."""
    cuda_graphs: bool = True
    """Replay the torch model as CUDA graphs on a GPU."""
    workspace_gb: float = Field(4.0, gt=0, le=256)
    """TensorRT builder workspace."""

    def spec(self, streams: int, conf: float | None = None) -> ModelSpec:
        """What the engine loads for this model, shared by ``streams`` streams; ``conf``: the detector's own
        threshold where it differs from :attr:`conf` (tracking takes boxes under it)."""
        ids = tuple(c for c in self.classes or () if isinstance(c, int))
        only_ids = self.classes is not None and len(ids) == len(self.classes)
        return ModelSpec(
            model=self.path or DEFAULT_MODEL,
            fallback_model=None if self.path else OFFLINE_FALLBACK_MODEL,
            imgsz=self.imgsz,
            conf=self.conf if conf is None else conf,
            iou=self.iou,
            max_det=self.max_det,
            classes=ids if only_ids else None,
            device=self.device,
            precision=self.precision,
            threads=self.threads,
            max_batch=self.batch_size,
            streams=streams,
            cache_dir=Path(self.cache_dir).expanduser() if self.cache_dir else None,
            calibration=self.calibration,
            calibration_frames=self.calibration_frames,
            cuda_graphs=self.cuda_graphs,
            workspace_gb=self.workspace_gb,
        )

    @model_validator(mode="after")
    def _int8_needs_calibration(self) -> ModelConfig:
        if self.precision == "int8" and not self.calibration:
            raise ValueError("precision int8 needs model.calibration (a folder of images or a video to calibrate on)")
        return self


class FacesConfig(_Strict):
    """Faces beside the main model: detection at its own rate, and recognition against an enrolled gallery."""

    detector: str | None = None
    """``mtcnn`` or an Ultralytics face model: a second model, run on every ``every_n_frames``-th frame (or on
    person crops) in its own thread, published on ``faces.<stream_id>``. ``None``: the main model's ``face``
    detections (``--model mtcnn``)."""
    search: Literal["frame", "persons"] = "frame"
    """``persons``: run the face detector on the main model's person boxes only (each face takes its person's
    track id)."""
    every_n_frames: int = Field(5, ge=1, le=10000)
    """Offer every n-th frame of a stream to the face thread; while it is busy, newer frames replace waiting ones."""
    conf: float = Field(0.9, ge=0.0, le=1.0)
    """Face detector threshold (MTCNN's probability)."""
    recognize: bool = False
    """Match faces against the gallery: ``identity`` / ``anon_id`` and identity events."""
    gallery: str | None = None
    """The SQLite gallery ``edgesight faces enroll`` writes (``None``: ``$XDG_DATA_HOME/edgesight/faces.db``)."""
    weights: str = "vggface2"
    """Embedder: a state-dict path, ``vggface2`` (downloaded; online only), ``seeded:N`` (random; tests), or an
    ``.onnx`` face-embedding model."""
    threshold: float = Field(1.0, gt=0.0, le=4.0)
    """Largest embedding distance that counts as a match."""
    attempts: int = Field(5, ge=1, le=1000)
    """Embeddings tried per track before its face stays unknown (anonymous)."""
    min_face_px: int = Field(20, ge=1, le=4096)
    """Faces narrower than this are not embedded."""


class SecondaryConfig(_Strict):
    """A secondary model on the primary detector's crops (see pipeline/secondary.py)."""

    kind: Literal["classify", "ocr", "embed"]
    model: str | None = None
    """``classify``: an Ultralytics ``-cls`` model (``.pt``, or a ``-cls.yaml`` architecture). ``embed``: the face
    embedder, as ``faces.weights`` (a state-dict path, ``vggface2``, ``seeded:N`` or an ``.onnx`` model)."""
    classes: list[str] | None = None
    """Labels of the primary detections it looks at (``None``: all)."""
    min_size_px: float = Field(16.0, ge=1)
    margin: float | None = Field(None, ge=0, le=1)
    """Crops grow by this share of the box on each side (default 0.05; 0 for ``embed``: faces are enrolled from
    tight boxes)."""
    gallery: str | None = None
    """``embed``: the face gallery matched against (``None``: the default ``edgesight faces`` gallery)."""
    threshold: float = Field(1.0, gt=0.0, le=4.0)
    """``embed``: the largest embedding distance that counts as the gallery's person."""
    match: bool = True
    """``embed``: match each face against the gallery (``identity``, ``distance``)."""
    embedding: bool = False
    """``embed``: publish the vector itself (``embedding``, unit length) on each detection."""
    crops: Literal["operated", "frame"] = "operated"
    """Where crops are cut from on a stream with ``preprocess`` operations: ``operated``, the picture the primary
    model saw (a sideways camera turned upright, the region cropped); ``frame``, the camera's own frame (full
    resolution and colour, for operations that shrink or gray the picture)."""
    imgsz: int = Field(224, ge=32, le=1024)
    top_k: int = Field(3, ge=1, le=20)
    whole_frame: bool = False
    """``classify``: the whole frame instead of detections; the message gets a top-level ``classes``."""
    lines: Literal["single", "multi"] = "single"
    """``ocr``: ``single`` reads each crop as one line (plates, labels); ``multi`` finds the lines in it first."""

    @property
    def crop_margin(self) -> float:
        return self.margin if self.margin is not None else (0.0 if self.kind == "embed" else 0.05)

    @model_validator(mode="after")
    def _fits_its_kind(self) -> SecondaryConfig:
        if self.kind == "embed":
            if not (self.match or self.embedding):
                raise ValueError("secondary embed: match, embedding or both must be on")
            if self.whole_frame:
                raise ValueError("secondary embed runs on detections (faces), not whole_frame")
            if not self.classes:
                raise ValueError("secondary embed needs classes: the face detector's labels, e.g. [face]")
            return self
        embed_only = {"gallery", "threshold", "match", "embedding"} & self.model_fields_set
        if embed_only:
            raise ValueError(f"secondary {self.kind}: {', '.join(sorted(embed_only))} apply to kind embed only")
        return self
