"""The pipeline's configuration: a pydantic schema that forbids unknown keys.

A YAML file (``edgesight run CONFIG.yaml``) and the quick command-line form
(``--source … --model …``) both end up as a :class:`PipelineConfig`. Relative
paths are taken relative to the working directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.base import ModelSpec
from pipeline.envexpand import expand_env
from pipeline.errors import ConfigError
from pipeline.queues import OverflowPolicy

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_MODEL = "yolo11n.pt"
"""The model when none is given: COCO's 80 classes, downloaded on first use."""
OFFLINE_FALLBACK_MODEL = "edgesight-det"
"""Loaded instead of :data:`DEFAULT_MODEL` where that cannot be downloaded (bundled, trained on generated scenes)."""
STREAM_ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _refuse_nvdec_in_process(decoder: str, decode_process: bool | str, cpu_decoders: str) -> None:
    """A decoding process hands on host frames (or copies them to the GPU itself): NVDEC's stay on the GPU."""
    if decode_process and decoder == "nvdec":
        raise ValueError(f"decode_process needs a CPU decoder ({cpu_decoders}): NVDEC frames stay on the GPU")


class FileSourceConfig(_Strict):
    """A video file, decoded as fast as the pipeline takes frames (``realtime`` paces it at its own fps)."""

    type: Literal["file"] = "file"
    path: Path
    realtime: bool = False
    """Pace the file at its own frame rate, as a camera delivers (a stand-in for a live source)."""
    loop: bool = False
    """Play the file again from the start each time it ends (never ends by itself)."""
    decoder: Literal["auto", "cpu", "pyav", "nvdec"] = "cpu"
    """``cpu``: OpenCV, BGR frames. ``pyav``: PyAV on the CPU, frames kept as the decoder's I420 planes (converted on
    the GPU). ``nvdec``: on the GPU (PyNvVideoCodec), frames stay there. ``auto``: NVDEC where it can run, else
    PyAV where it is installed, else OpenCV."""
    decode_process: bool | Literal["gpu"] = False
    """Decode in a child process (CPU decoders only; see :mod:`pipeline.sources.process`): a decoder that crashes takes
    only its child down, and its per-frame Python stays off the pipeline's interpreter lock. ``gpu``: the child also
    copies each frame to the GPU, and the pipeline gets it there (as NVDEC's frames); one CUDA context per stream."""

    @model_validator(mode="after")
    def _cpu_decoder_in_process(self) -> FileSourceConfig:
        _refuse_nvdec_in_process(self.decoder, self.decode_process, "cpu, pyav or auto")
        return self

    @property
    def live(self) -> bool:
        return self.realtime


class WebcamSourceConfig(_Strict):
    """A local camera: an index (``0``) or a device path (``/dev/video0``)."""

    type: Literal["webcam"] = "webcam"
    device: int | str = 0
    decode_process: bool | Literal["gpu"] = False
    """Decode in a child process (see the file source's ``decode_process``)."""

    @property
    def live(self) -> bool:
        return True


class UrlSourceConfig(_Strict):
    """An RTSP or HTTP stream (RTSP over TCP)."""

    type: Literal["url"] = "url"
    url: str = Field(pattern=r"^(rtsps?|https?)://")
    """The stream's address; its ``user:password@`` never appears in logs or messages (``${NAME}`` takes it from the
    environment)."""
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    """Longest wait for the stream to open (connect, describe, first packets)."""
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    """A stream that delivers nothing for this long is treated as gone and reconnected."""
    decoder: Literal["auto", "cpu", "nvdec"] = "cpu"
    """``cpu``: OpenCV (FFmpeg), BGR frames. ``nvdec``: PyAV demuxes, the GPU decodes (PyNvVideoCodec), frames stay
    there. ``auto``: NVDEC where PyNvVideoCodec, PyAV and a CUDA GPU are present, else the CPU."""
    decode_process: bool | Literal["gpu"] = False
    """Decode in a child process (see the file source's ``decode_process``)."""

    @model_validator(mode="after")
    def _cpu_decoder_in_process(self) -> UrlSourceConfig:
        _refuse_nvdec_in_process(self.decoder, self.decode_process, "cpu or auto")
        return self

    @property
    def live(self) -> bool:
        return True


class ImagesSourceConfig(_Strict):
    """Every image in a folder, in name order."""

    type: Literal["images"] = "images"
    path: Path
    fps: float = Field(30.0, gt=0, le=1000)
    """Frame rate the images' timestamps are counted at."""

    @property
    def live(self) -> bool:
        return False


class SyntheticSourceConfig(_Strict):
    """A generated street scene (no camera or file needed)."""

    type: Literal["synthetic"] = "synthetic"
    seed: int = Field(0, ge=0)
    frames: int = Field(300, ge=1)
    width: int = Field(640, ge=64, le=7680)
    height: int = Field(360, ge=64, le=4320)
    fps: float = Field(30.0, gt=0, le=240)

    @property
    def live(self) -> bool:
        return False


SourceConfig = Annotated[
    FileSourceConfig | WebcamSourceConfig | UrlSourceConfig | ImagesSourceConfig | SyntheticSourceConfig,
    Field(discriminator="type"),
]


SOURCE_TYPES = frozenset({"file", "webcam", "url", "images", "synthetic"})


def parse_source(text: str) -> dict[str, Any]:
    """Turn a ``--source`` string into a source config dict.

    ``0`` or ``/dev/video0`` → webcam; ``rtsp://…``/``http(s)://…`` → url;
    ``synthetic://?seed=7&frames=300`` → synthetic; a folder → images; anything
    else → a video file.
    """
    if text.isdigit():
        return {"type": "webcam", "device": int(text)}
    if re.match(r"^/dev/video\d+$", text):
        return {"type": "webcam", "device": text}
    if re.match(r"^(rtsps?|https?)://", text):
        return {"type": "url", "url": text}
    if text.startswith("synthetic://"):
        query = dict(parse_qsl(urlsplit(text).query))
        return {"type": "synthetic", **query}
    if Path(text).is_dir():
        return {"type": "images", "path": text}
    return {"type": "file", "path": text}


NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class _Region(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    units: Literal["auto", "normalized", "pixels"] = "auto"
    """``auto``: normalized (0–1, scaled by the frame size) when every coordinate is within [0, 1], else pixels."""
    classes: list[int | str] | None = None
    """Count only these classes, by label or id (default: all)."""
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    """Detections under this confidence do not count here."""
    confirm_frames: int = Field(3, ge=1, le=1000)
    """Frames in a row an object must be on its new side (of a line, of a zone's border) before it counts: box
    jitter near the border then counts nothing. Events keep the frame where the change began."""

    @property
    def normalized(self) -> bool:
        if self.units != "auto":
            return self.units == "normalized"
        return all(0.0 <= v <= 1.0 for p in self.points for v in p)  # type: ignore[attr-defined]

    def wants(self, label: str, class_id: int, confidence: float) -> bool:
        if confidence < self.min_confidence:
            return False
        return self.classes is None or label in self.classes or class_id in self.classes


class LineConfig(_Region):
    """A named directed line; ``in`` is crossing from the right of ``p1 → p2`` to its left, as seen on screen…

    …precisely: the cross product ``(p2 − p1) × (anchor − p1)`` going from negative to positive, in image
    coordinates (x right, y down). The anchor is the bottom-centre of the box.
    """

    points: tuple[tuple[float, float], tuple[float, float]]
    """Two ``[x, y]`` points in source pixels."""

    @model_validator(mode="after")
    def _distinct(self) -> LineConfig:
        if self.points[0] == self.points[1]:
            raise ValueError(f"line '{self.name}': its two points are the same")
        return self


class ZoneConfig(_Region):
    """A named polygon: objects entering and leaving it, how long they stay, how many are in it."""

    points: list[tuple[float, float]] = Field(min_length=3)
    """Three or more ``[x, y]`` points in source pixels."""
    loiter_s: float | None = Field(None, gt=0)
    """Raise a ``loiter`` event for an object inside longer than this (seconds of stream time)."""
    continue_visits: bool = True
    """A new track id that would enter where a lost visitor of its class was last seen, or on top of a visible
    one, continues that visit instead of entering (the tracker lost an object in a crowd, or the detector saw it
    twice). Turn off where objects really appear inside the zone next to one another (a doorway inside it)."""


class TrackingConfig(_Strict):
    """Multi-object tracking (Ultralytics' trackers); every detection gets a ``track_id``."""

    enabled: bool = True
    tracker: Literal["bytetrack", "botsort"] = "botsort"
    """Ultralytics' BoT-SORT (its default for ``track``; here without camera-motion compensation or ReID), or
    ByteTrack."""
    track_buffer: int = Field(30, ge=1, le=10000)
    """Frames a lost track is kept for re-identification before its object is declared gone."""
    match_thresh: float = Field(0.9, gt=0.0, le=1.0)
    """Association cost limit (1 − IoU, fused with the score): 0.9 re-attaches boxes that overlap their track by
    10% or more, which keeps slow, often-occluded walkers on one id better than Ultralytics' 0.8."""
    stitch: bool = True
    """Give a new track the id of a recently lost one it continues (same class, where that one would be now)."""
    new_track_conf: float | None = Field(None, ge=0.0, le=1.0)
    """Confidence a detection needs to start a track (default: ``model.conf``). Higher: fewer tracks from
    duplicate or spurious boxes; a published detection under it that continues no track gets a one-off id."""


class EventsConfig(_Strict):
    """What goes out on ``events.<stream_id>`` and ``counts.<stream_id>``."""

    objects: bool = True
    """Lifecycle events (``new``/``update``/``end``) for every tracked object."""
    update_interval_s: float = Field(1.0, gt=0)
    """At most one ``update`` per object (or loitering) event per this much stream time."""
    counts_interval_s: float = Field(1.0, gt=0)
    """How often ``counts`` messages go out (stream time); one more goes out when a stream ends."""
    thumbnails: bool = False
    """Attach a JPEG crop of the object as a third message part to ``new`` events."""
    thumbnail_quality: int = Field(80, ge=10, le=100)
    """JPEG quality of the thumbnails."""


class PrivacyConfig(_Strict):
    """What is hidden in the images that leave the box (event thumbnails, recordings)."""

    redact: list[int | str] = ["face"]
    """Labels (or class ids) whose boxes are redacted; ``[]`` turns redaction off. ``[face, person]`` hides
    whole people with a person detector."""
    method: Literal["pixelate", "blur", "fill"] = "pixelate"
    """How a redacted box is hidden."""


class ReconnectConfig(_Strict):
    """How a live source (camera, RTSP/HTTP stream) is supervised; see pipeline/supervision.py."""

    enabled: bool = True
    base_s: float = Field(0.5, gt=0, le=60)
    """First wait before reconnecting; doubles on each failure …"""
    cap_s: float = Field(10.0, gt=0, le=3600)
    """… up to this."""
    jitter: float = Field(0.25, ge=0, le=1)
    """Each wait is spread by ± this share (cameras behind one switch do not retry in step)."""
    idle_timeout_s: float = Field(10.0, gt=0, le=3600)
    """A read that takes longer than this is a stalled source (time spent waiting on a full queue never counts)."""
    offline_after_s: float = Field(30.0, gt=0)
    """Down this long: state ``offline`` (still retried)."""
    max_attempts: int | None = Field(None, ge=1)
    """Give up (the stream ends with an error) after this many failed attempts in a row; ``None``: never."""


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


class MotionConfig(_Strict):
    """Motion gating: still frames skip the model (see pipeline/motion.py)."""

    enabled: bool = True
    method: Literal["diff", "mog2"] = "diff"
    """``diff``: against the last frame the model saw; ``mog2``: OpenCV's background subtractor."""
    min_area: float = Field(0.002, gt=0, le=1)
    """Share of the (downscaled) frame that must change for the model to run."""
    pixel_threshold: int = Field(25, ge=1, le=255)
    """``diff``: a gray-level change larger than this counts as change."""
    keepalive_s: float = Field(2.0, ge=0)
    """Run the model at least this often (stream time) even on a still scene."""
    on_still: Literal["reuse", "skip"] = "reuse"
    """``reuse``: publish the last detections again, marked ``reused``; ``skip``: publish nothing for the frame."""


class StreamConfig(_Strict):
    """One stream: a source, its id and how its capture queue overflows."""

    id: str = Field(pattern=STREAM_ID_PATTERN)
    """Letters, digits, ``_`` and ``-``; used in topics (``detections.<id>``)."""
    source: SourceConfig
    queue_policy: OverflowPolicy | None = None
    """``drop_oldest`` for live sources and ``block`` for files unless set."""
    queue_size: int | None = Field(None, ge=1, le=1024)
    """Frames the capture queue holds: 1 for live sources unless set (only the newest frame waits for the model,
    so latency is set by the model, not by a queue), 2 for files (decoding runs ahead while the model works)."""
    max_frames: int | None = Field(None, ge=1)
    """Stop the stream after this many frames."""
    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []
    privacy: PrivacyConfig = PrivacyConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    preprocess: list[ImageOpConfig] = []
    """Image operations before inference, in order (see pipeline/imageops.py); results stay in frame pixels."""
    motion: MotionConfig | None = None
    """Motion gating: off unless present."""

    @property
    def supervised(self) -> bool:
        """Cameras and network streams reconnect; files, folders and generated scenes end."""
        return self.reconnect.enabled and isinstance(self.source, (WebcamSourceConfig, UrlSourceConfig))

    @field_validator("source", mode="before")
    @classmethod
    def _source_shorthand(cls, value: Any) -> Any:
        return parse_source(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_region_names(self) -> StreamConfig:
        names = [r.name for r in (*self.lines, *self.zones)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stream '{self.id}': line/zone name '{dupes[0]}' is used twice")
        return self

    @property
    def policy(self) -> OverflowPolicy:
        if self.queue_policy is not None:
            return self.queue_policy
        return OverflowPolicy.DROP_OLDEST if self.source.live else OverflowPolicy.BLOCK

    @property
    def capacity(self) -> int:
        """The capture queue's size: ``queue_size``, else 1 for live sources and 2 for the others."""
        if self.queue_size is not None:
            return self.queue_size
        return 1 if self.source.live else 2


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


class MasksConfig(_Strict):
    """How segmentation models' instance masks are published (see the detections schema)."""

    polygon: bool = True
    """Each detection's mask as one closed polygon in source pixels."""
    rle: bool = False
    """Also as COCO run-length encoding (exact, larger)."""
    tolerance_px: float = Field(0.5, ge=0.0, le=50.0)
    """Polygon simplification: no outline point moves more than this many source pixels (0: every vertex)."""


class CurveConfig(_Strict):
    """CurveZMQ: encrypt the bus and admit only known subscribers (keys from ``edgesight keys generate``)."""

    server_secret: Path
    """The publisher's ``.key_secret`` file."""
    clients: Path
    """A folder of the allowed subscribers' public ``.key`` files."""


class PublishConfig(_Strict):
    """Where and how results go out over ZeroMQ."""

    endpoint: str = Field(DEFAULT_ENDPOINT, pattern=r"^(tcp|ipc|inproc)://")
    """Where results are published (bound): ``tcp://host:port``, ``ipc://path``."""
    wait_for_subscriber: bool = False
    """Hold the first message until a subscriber has connected, then never drop (back-pressure instead)."""
    subscriber_timeout_s: float | None = Field(None, gt=0)
    """Give up waiting for a subscriber after this long (``None``: wait until stopped)."""
    send_hwm: int = Field(1000, ge=1)
    """Messages queued for slow subscribers before new ones are dropped (counted)."""
    masks: MasksConfig = MasksConfig()
    curve: CurveConfig | None = None
    """Off by default (the default endpoint is loopback); set it before binding to a network address."""


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


class MetricsConfig(_Strict):
    """Prometheus metrics, health and readiness over HTTP, and a status file (see pipeline/health.py)."""

    port: int | None = Field(None, ge=0, le=65535)
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` here (``None``: off; 0: any free port)."""
    host: str = "127.0.0.1"
    """Address the endpoints listen on (loopback unless set)."""
    """Bind address; ``0.0.0.0`` for a scraper on another machine."""
    ready_share: float = Field(1.0, ge=0.0, le=1.0)
    """``/readyz`` answers 200 once this share of the streams is online."""
    stale_after_s: float = Field(10.0, gt=0)
    """``/healthz`` fails when a processing stage has not gone round its loop for this long."""
    status_file: str | None = None
    """Write health and readiness as JSON here every 5 s (for ``edgesight health`` in container checks)."""


class PreviewConfig(_Strict):
    """The browser preview: annotated MJPEG per stream (privacy redaction applies)."""

    port: int | None = Field(None, ge=0, le=65535)
    """Serve the page here (``None``: off; 0: any free port)."""
    host: str = "127.0.0.1"
    """Address the preview listens on (loopback unless set)."""
    max_fps: float = Field(10.0, gt=0, le=120)
    """Frames per second sent to each viewer at most."""
    processed: bool = False
    """Show each stream after its ``preprocess`` operations (rotated, cropped, enhanced: what the model saw), with
    the overlays drawn where they land there; ``False``: the camera's own frame."""


class ControlConfig(_Strict):
    """Streams added, removed and listed at run time (``edgesight streams …``), over ZeroMQ REQ/REP."""

    endpoint: str | None = Field(None, pattern=r"^(tcp|ipc|inproc)://")
    """Where the pipeline answers (``None``: off). With ``publish.curve``, the same keys guard it."""


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


class PipelineConfig(_Strict):
    """A whole pipeline: streams, one model, one publisher."""

    streams: list[StreamConfig] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    publish: PublishConfig = PublishConfig()
    queue_size: int = Field(2, ge=1, le=1024)
    """Size of the queues between preprocess, infer and publish (raised to twice the batch when batching)."""
    preprocess_threads: int | None = Field(None, ge=1, le=64)
    """Preprocess threads, each serving a fixed share of the streams (default: 1 on the CPU, up to 4 on a GPU)."""
    tracking: TrackingConfig = TrackingConfig()
    events: EventsConfig = EventsConfig()
    faces: FacesConfig | None = None
    """Off unless present (``--faces``, ``--recognize``)."""
    metrics: MetricsConfig = MetricsConfig()
    preview: PreviewConfig = PreviewConfig()
    control: ControlConfig = ControlConfig()
    secondary: list[SecondaryConfig] = []
    """Classifiers and text reading on the primary detections, in order."""

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineConfig:
        seen: set[str] = set()
        for stream in self.streams:
            if stream.id in seen:
                raise ValueError(f"streams: stream id '{stream.id}' is used twice")
            seen.add(stream.id)
            if (stream.lines or stream.zones) and not self.tracking.enabled:
                raise ValueError(f"streams: stream '{stream.id}': lines and zones need tracking.enabled")
        for stream in self.streams:
            geometric = any(op.op in GEOMETRIC_OPS for op in stream.preprocess)
            if geometric and self.publish.masks.rle:
                raise ValueError(
                    f"streams: stream '{stream.id}': publish.masks.rle with crop/rotate/flip/resize/"
                    "undistort is not supported (polygons are mapped back; use polygon)"
                )
        faces = self.faces
        if faces is not None and not self.tracking.enabled and (faces.search == "persons" or faces.detector is None):
            raise ValueError(
                "faces: recognition of the main model's faces and faces.search: persons need tracking.enabled"
            )
        if faces is not None and faces.search == "persons" and faces.detector is None:
            raise ValueError("faces.search: persons needs faces.detector (the face model run on person crops)")
        if faces is not None and faces.detector is None and not faces.recognize:
            raise ValueError("faces: with no faces.detector there is nothing to do unless faces.recognize is true")
        return self


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif previous == "source" and part in SOURCE_TYPES:
            pass  # the union's branch name (the ``type`` tag) adds nothing for the user
        else:
            name = str(part) if str(part).isprintable() and str(part) else repr(str(part))  # "\n" stays one line
            out += f".{name}" if out else name
        previous = part
    return out or "(top level)"


def describe_validation_error(exc: ValidationError, origin: str) -> str:
    """One line naming the file and each bad key."""
    parts = []
    for err in exc.errors():
        where = _format_location(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            # a whole-config rule names its own keys ("streams: …", "faces: …")
            parts.append(msg if where == "(top level)" and ": " in msg else f"{where}: {msg}")
    return f"{origin}: " + "; ".join(parts)


def build_config(data: Any, origin: str) -> PipelineConfig:
    """Validate a config mapping; ``origin`` names where it came from in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origin)) from exc


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read and validate a YAML config file, ``${NAME}`` in its values taken from ``environ`` (the process's)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: '{path}'")
    if not path.is_file():
        raise ConfigError(f"config path is not a file: '{path}'")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from exc
    data = expand_env(data, os.environ if environ is None else environ, str(path))
    return build_config(data, str(path))
