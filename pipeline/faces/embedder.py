"""Face embeddings: facenet-pytorch's InceptionResnetV1, or an ONNX face-embedding model.

An embedder turns face boxes in an RGB image into L2-normalized vectors; two
crops of one person lie closer (Euclidean distance) than crops of two people.
``weights`` picks what the InceptionResnetV1 knows:

- a path to a state dict (e.g. the VGGFace2 weights saved on a connected machine);
- ``vggface2`` / ``casia-webface``: facenet-pytorch downloads them (online only);
- ``seeded:N``: random weights from seed N, deterministic but with no knowledge of
  faces (tests and demos: only near-identical images match).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

FACENET_SIZE = 160
PRETRAINED = ("vggface2", "casia-webface")
FACENET_MISSING = "face recognition needs facenet-pytorch: pip install --no-deps facenet-pytorch"


class FaceEmbedder(Protocol):
    """Embeds face boxes (``x1, y1, x2, y2`` in pixels) of one RGB image."""

    name: str
    """Identifies the weights: embeddings of different embedders are never compared."""

    def embed(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of faces already cut out (RGB, any size), in one batch."""
        ...


def face_crops(rgb: np.ndarray, boxes: np.ndarray, size: int, margin: int = 0) -> np.ndarray:
    """``(N, size, size, 3)`` float32 crops, as facenet-pytorch's ``extract_face`` cuts them."""
    from facenet_pytorch.models.utils.detect_face import extract_face

    crops = [extract_face(rgb, box, image_size=size, margin=margin).permute(1, 2, 0).numpy() for box in boxes]
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.float32)


def whole_crops(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """:func:`face_crops` of faces already cut out: each whole crop, resized."""
    if not crops:
        return np.zeros((0, size, size, 3), np.float32)
    return np.concatenate([face_crops(c, np.array([[0, 0, c.shape[1], c.shape[0]]], np.float32), size) for c in crops])


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class FacenetEmbedder:
    """facenet-pytorch's ``InceptionResnetV1`` (512-d embeddings of 160x160 crops, standardized as it expects)."""

    def __init__(self, weights: str, device: str = "cpu") -> None:
        try:
            import torch
            from facenet_pytorch import InceptionResnetV1
        except ImportError as exc:
            raise ModelError(FACENET_MISSING) from exc
        self._torch = torch
        self.device = device
        if weights in PRETRAINED:
            try:
                net = InceptionResnetV1(pretrained=weights)
            except Exception as exc:  # facenet-pytorch downloads here; offline it raises URLError or others
                raise ModelError(
                    f"face embedder weights '{weights}' could not be downloaded ({type(exc).__name__}; offline?): "
                    "save them on a connected machine and set faces.weights to the file"
                ) from exc
            self.name = f"facenet-{weights}"
        elif weights.startswith("seeded:"):
            net = seeded_facenet(int(weights.split(":", 1)[1]))
            self.name = f"facenet-{weights}"
            log.warning("face embedder '%s' has random weights: only near-identical images will match", weights)
        else:
            net = InceptionResnetV1(pretrained=None)
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ModelError(f"face embedder weights not found: '{weights}'")
            try:
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
            except Exception as exc:
                raise ModelError(f"cannot load face embedder weights '{weights}': {exc}".split("\n")[0]) from exc
            self.name = f"facenet-{_digest(path)}"
        self._net = net.eval().to(device)

    def embed(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``(N, 512)`` L2-normalized embeddings of the faces at ``boxes``."""
        return self._forward(face_crops(rgb, boxes, FACENET_SIZE))

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self._forward(whole_crops(crops, FACENET_SIZE))

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        torch = self._torch
        if not len(crops):
            return np.zeros((0, 512), np.float32)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            out = self._net((x - 127.5) / 128.0)
        return _normalized(out.float().cpu().numpy())


def seeded_facenet(seed: int) -> Any:
    """An InceptionResnetV1 with seeded random weights whose embeddings vary with the image."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(seed)
    net = InceptionResnetV1(pretrained=None)
    with torch.no_grad():  # the default init maps every face to almost the same vector
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net


class OnnxEmbedder:
    """An ONNX face-embedding model (ArcFace-style: ``(B, 3, S, S)`` RGB in, ``(B, D)`` out).

    Crops are resized to the model's input size and standardized as ``(x - 127.5) / 128``.
    """

    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        file = Path(path).expanduser()
        if not file.is_file():
            raise ModelError(f"face embedder model not found: '{path}'")
        try:
            self._session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load face embedder '{path}': {exc}".split("\n")[0]) from exc
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        size = inp.shape[-1]
        self._size = size if isinstance(size, int) else 112
        self.name = f"onnx-{_digest(file)}"

    def embed(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self._forward(face_crops(rgb, boxes, self._size))

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self._forward(whole_crops(crops, self._size))

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, 0), np.float32)
        nchw = crops.transpose(0, 3, 1, 2)
        (out,) = self._session.run(None, {self._input: ((nchw - 127.5) / 128.0).astype(np.float32)})[:1]
        return _normalized(np.asarray(out, np.float32).reshape(len(crops), -1))


def check_embedder(weights: str) -> None:
    """Raise the :class:`ModelError` loading ``weights`` would for a file or library that is not there (loads nothing;
    whether pretrained weights can be downloaded is only known by trying)."""
    if weights.endswith(".onnx"):
        if not Path(weights).expanduser().is_file():
            raise ModelError(f"face embedder model not found: '{weights}'")
        return
    if importlib.util.find_spec("facenet_pytorch") is None:
        raise ModelError(FACENET_MISSING)
    if weights.startswith("seeded:"):
        if not weights.split(":", 1)[1].isdigit():
            raise ModelError(f"face embedder '{weights}': seeded:N needs a whole number N")
    elif weights not in PRETRAINED and not Path(weights).expanduser().is_file():
        raise ModelError(f"face embedder weights not found: '{weights}'")


def load_embedder(weights: str, device: str = "cpu") -> FaceEmbedder:
    """An ONNX embedder for a ``.onnx`` path, else facenet's InceptionResnetV1 with ``weights``."""
    check_embedder(weights)
    if weights.endswith(".onnx"):
        return OnnxEmbedder(weights)
    return FacenetEmbedder(weights, device)


def _digest(path: Path) -> str:
    from engines.weights import file_sha256

    return file_sha256(path)[:12]


def largest(boxes: np.ndarray) -> int:
    """Index of the largest box (enrollment keeps the main face of a photo)."""
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
