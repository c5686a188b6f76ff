"""Secondary models on the primary detector's crops: classification, text reading and face embeddings, chained
as DeepStream chains its secondary inference.

Each secondary model takes the detections of the labels it is configured for
(``classes``) and at least ``min_size_px`` across, crops them from the frame
(grown by ``margin``) and adds attributes to them: ``classes`` (top-k labels
with scores) from an Ultralytics ``-cls`` model; ``text`` and
``text_confidence`` from RapidOCR (``rapidocr-onnxruntime``; its detection and
recognition models ship in the wheel); or, from a face embedder on a face
detector's boxes, ``identity`` and ``distance`` against the face gallery and,
when asked, the ``embedding`` itself. They run in their own stage between
infer and publish, so the primary model never waits for them.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from pipeline.config import SecondaryConfig
from pipeline.errors import ModelError
from pipeline.imageops import map_boxes
from pipeline.messages import FrameResult, ResultItem, SeenImage
from pipeline.queues import BoundedQueue, StreamCount
from pipeline.stages.base import FailureHandler, Observe, QueueStage

log = logging.getLogger(__name__)

OCR_MISSING = "secondary ocr needs rapidocr-onnxruntime: pip install rapidocr-onnxruntime"


class CropModel(Protocol):
    """Adds attributes to crops: one mapping per crop."""

    name: str

    def run(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]: ...


class CropClassifier:
    """An Ultralytics classification model (``yolo11n-cls.pt``, a ``-cls.yaml`` architecture), through its predictor."""

    def __init__(self, model: str, imgsz: int, top_k: int, device: str) -> None:
        from ultralytics import YOLO

        from engines.weights import resolve_weights

        path = model if model.endswith((".yaml", ".yml")) else str(resolve_weights(model))
        try:
            self._model = YOLO(path)
        except Exception as exc:
            raise ModelError(f"cannot load classifier '{model}': {exc}".split("\n")[0]) from exc
        if self._model.task != "classify":
            raise ModelError(f"secondary classify: '{model}' is a '{self._model.task}' model, not 'classify'")
        self.name = model
        self._imgsz, self._top_k = imgsz, top_k
        self._device = "cpu" if device == "cpu" else None

    def run(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        if not crops:
            return []
        results: Any = self._model.predict(list(crops), imgsz=self._imgsz, verbose=False, device=self._device)
        out: list[dict[str, Any]] = []
        for r in results:
            probs = r.probs.data.float().cpu().numpy()
            order = np.argsort(-probs)[: self._top_k]
            out.append({"classes": [{"label": r.names[int(i)], "score": round(float(probs[i]), 4)} for i in order]})
        return out


class CropReader:
    """RapidOCR on each crop. ``single``: the crop is one line (a plate): recognition alone reads it whole.
    ``multi``: text lines are found in the crop first and read left to right, joined by spaces; the confidence is
    the weakest line's."""

    name = "rapidocr"

    def __init__(self, lines: str = "single") -> None:
        self._single = lines == "single"
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ModelError(OCR_MISSING) from exc
        self._ocr = RapidOCR()

    def run(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for crop in crops:
            if self._single:
                read, _ = self._ocr(crop, use_det=False, use_cls=False, use_rec=True)
                text, score = (str(read[0][0]), float(read[0][1])) if read else ("", 0.0)
                out.append({"text": text, "text_confidence": round(score, 4)} if text.strip() else {})
                continue
            lines, _ = self._ocr(crop)
            if not lines:
                out.append({})
                continue
            lines = sorted(lines, key=lambda line: min(p[0] for p in line[0]))
            text = " ".join(str(line[1]) for line in lines)
            out.append({"text": text, "text_confidence": round(float(min(line[2] for line in lines)), 4)})
        return out


class CropEmbedder:
    """A face embedder on face crops: the nearest enrolled person (``identity`` within ``threshold``, else
    ``None``; ``distance`` to the nearest) and, with ``embedding``, the unit vector itself."""

    def __init__(self, config: SecondaryConfig, device: str) -> None:
        from engines.torch_backend import select_device
        from pipeline.faces.embedder import load_embedder
        from pipeline.faces.gallery import FaceGallery, Matcher, gallery_path

        self._embedder = load_embedder(config.model or "vggface2", str(select_device(device)))
        self.name = self._embedder.name
        self._vector = config.embedding
        self._matcher: Matcher | None = None
        if config.match:
            gallery = FaceGallery(gallery_path(config.gallery))
            try:
                self._matcher = Matcher.from_gallery(gallery, self.name, config.threshold)
            finally:
                gallery.close()
            if not len(self._matcher):
                log.warning("secondary embed: gallery '%s' has nobody enrolled; every face is unknown", gallery.path)

    def run(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        if not crops:
            return []
        vectors = self._embedder.embed_crops([np.ascontiguousarray(c[..., ::-1]) for c in crops])  # BGR -> RGB
        out: list[dict[str, Any]] = [{} for _ in crops]
        if self._matcher is not None:
            for attrs, match in zip(out, self._matcher.match(vectors), strict=True):
                attrs["identity"] = match.identity
                if np.isfinite(match.distance):
                    attrs["distance"] = round(match.distance, 4)
        if self._vector:
            for attrs, vector in zip(out, vectors, strict=True):
                attrs["embedding"] = [round(float(v), 5) for v in vector]
        return out


def check_crop_model(config: SecondaryConfig) -> None:
    """Raise the :class:`ModelError` loading the model would for a file or library that is not there (loads nothing)."""
    if config.kind == "ocr":
        if importlib.util.find_spec("rapidocr_onnxruntime") is None:
            raise ModelError(OCR_MISSING)
    elif config.kind == "embed":
        from pipeline.faces.embedder import check_embedder

        check_embedder(config.model or "vggface2")
    elif not config.model:
        raise ModelError("secondary classify needs model (an Ultralytics -cls model)")
    else:
        from engines.weights import check_model_file

        check_model_file(config.model)


def load_crop_model(config: SecondaryConfig, device: str) -> CropModel:
    check_crop_model(config)
    if config.kind == "ocr":
        return CropReader(config.lines)
    if config.kind == "embed":
        return CropEmbedder(config, device)
    assert config.model is not None
    return CropClassifier(config.model, config.imgsz, config.top_k, device)


class SecondaryStage(QueueStage[FrameResult, FrameResult]):
    """Runs the secondary models on each result's matching detections and passes the result on, in order."""

    def __init__(
        self,
        inp: BoundedQueue[ResultItem],
        out: BoundedQueue[ResultItem],
        streams: StreamCount,
        models: Sequence[tuple[SecondaryConfig, CropModel]],
        stop: threading.Event,
        on_failure: FailureHandler,
        observe: Observe | None = None,
    ) -> None:
        super().__init__("secondary", inp, out, streams, stop, on_failure, observe)
        self.models = list(models)

    def process(self, result: FrameResult) -> FrameResult:
        labels = [result.labels.get(int(c), str(int(c))) for c in result.boxes[:, 5]]
        attributes: list[dict[str, Any]] = [{} for _ in labels]
        frame_attributes: dict[str, Any] = {}
        pictures = _Pictures(result)
        for config, model in self.models:
            source = config.crops
            if config.whole_frame:
                frame_attributes.update(model.run([pictures.image(source)])[0])
                continue
            places = pictures.places(source)
            sizes = np.minimum(places[:, 2] - places[:, 0], places[:, 3] - places[:, 1])
            rows = [k for k, size in enumerate(sizes) if _wanted(config, labels[k], size)]
            if not rows:
                continue
            image = pictures.image(source)
            h, w = image.shape[:2]
            crops = [_crop(image, places[k], config.crop_margin, w, h) for k in rows]
            for k, attrs in zip(rows, model.run(crops), strict=True):
                attributes[k].update(attrs)
        # the operated-on picture has served its purpose: published results do not keep it alive
        return replace(result, attributes=tuple(attributes), frame_attributes=frame_attributes or None, seen=None)


class _Pictures:
    """A result's pictures for crops, fetched (from the GPU, maybe) only when a model needs pixels:
    ``operated`` (what the model saw, after the stream's image operations) or ``frame`` (the camera's own)."""

    def __init__(self, result: FrameResult) -> None:
        self.result = result
        self._images: dict[str, np.ndarray] = {}
        self._places: dict[str, np.ndarray] = {}

    def _seen(self, source: str) -> SeenImage | None:
        return self.result.seen if source == "operated" else None

    def image(self, source: str) -> np.ndarray:
        if source not in self._images:
            seen = self._seen(source)
            self._images[source] = self.result.frame.host_image() if seen is None else seen.host_image()
        return self._images[source]

    def places(self, source: str) -> np.ndarray:
        """Each box in that picture's pixels."""
        if source not in self._places:
            boxes, seen = self.result.boxes[:, :4], self._seen(source)
            self._places[source] = boxes if seen is None else map_boxes(boxes.astype(np.float64), seen.to_view)
        return self._places[source]


def _wanted(config: SecondaryConfig, label: str, size: float) -> bool:
    """A detection of the model's labels, at least ``min_size_px`` on its shorter side."""
    return (config.classes is None or label in config.classes) and size >= config.min_size_px


def _crop(image: np.ndarray, box: np.ndarray, margin: float, w: int, h: int) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    xa, ya = max(0, int(x1 - mx)), max(0, int(y1 - my))
    xb, yb = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    return np.ascontiguousarray(image[ya:yb, xa:xb])
