"""The detector every backend shares: letterbox → backend forward → batched NMS → source pixels.

A backend only supplies a :class:`ModelRunner` (a forward pass over a batch).
On the CPU, ``prepare`` letterboxes with NumPy and ``infer`` stacks uint8
arrays. On a GPU, ``prepare`` (in the preprocess threads) copies the frame
through a pinned buffer to the device once, on its own CUDA stream, and hands
on a :class:`GpuInput` once the copy is done; ``infer`` stacks the batch,
letterboxes and runs the model on the infer stream (one CUDA graph) and reads
back only the best candidates. The infer thread is the one serial stage, so
it makes as few calls per frame as it can.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from engines.base import EngineInfo, FrameFormat, ModelSpec
from engines.engine_cache import CachedArtifact
from engines.letterbox import CpuLetterbox, TorchLetterbox, geometry
from engines.masks import InstanceMasks, assemble
from engines.postprocess import (
    NmsSettings,
    batched_nms,
    greedy_keep,
    pack_kept,
    scale_to_sources,
    top_candidates,
    unpack_kept,
)
from engines.weights import LoadedModel
from engines.yuv import PixelLayout, i420_size, i420_to_bgr_torch, on_host, to_bgr

CANDIDATES = 1024
"""On a GPU, at most this many best-scoring anchors per image (or ``max_det`` if larger) enter NMS."""


class ModelRunner(Protocol):
    """A backend's forward pass.

    On the host (``on_gpu`` false) it takes a uint8 ``(B, 3, H, W)`` RGB array;
    on a GPU, a ``(B, 3, H, W)`` tensor on the device, already normalized, of
    ``input_dtype``. It returns the model's outputs as torch tensors: the raw
    predictions, then (segmentation models) the mask prototypes.
    """

    on_gpu: bool
    input_dtype: torch.dtype
    max_batch: int

    def forward(self, batch: Any) -> tuple[torch.Tensor, ...]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GpuInput:
    """A frame on the GPU (uint8 ``(H, W, 3)`` BGR, or ``(H * 3 / 2, W)`` I420), already there and finished: its
    upload (in the preprocess thread), its decoding (NVDEC, a decoding process's GPU ring) or its image operations
    were waited for by whatever made it, so the infer thread waits on nothing per frame."""

    tensor: torch.Tensor
    pooled: bool = False
    """The tensor is one of the detector's upload buffers, handed back to them once its batch has run."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


class _DeviceFrames:
    """Device buffers for uploaded frames, taken by the preprocess threads and handed back by the infer thread once
    their batch has run on the device. So uploads allocate nothing, and the infer thread frees no tensors: each free
    gives up the GIL, and in the one serial stage every wait to take it back counts."""

    PER_SHAPE = 64
    """At most this many spare buffers of one frame shape are kept."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def take(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        free = self._free.get(shape)
        try:
            return free.pop() if free else None
        except IndexError:  # another preprocess thread took the last one
            return None

    def give_back(self, tensors: Sequence[torch.Tensor]) -> None:
        for tensor in tensors:
            free = self._free.setdefault(tuple(tensor.shape), [])
            if len(free) < self.PER_SHAPE:
                free.append(tensor)

    def clear(self) -> None:
        """Let go of every spare buffer (to torch's caching allocator, for whatever needs memory next)."""
        self._free.clear()


class _Uploader(threading.local):
    """Per preprocess thread: a CUDA stream and a pinned staging buffer, with its views per frame shape."""

    def __init__(self, device: torch.device, buffers: _DeviceFrames) -> None:
        self.device = device
        self.buffers = buffers
        self.stream = torch.cuda.Stream(device)
        self.pinned: torch.Tensor | None = None
        self.views: dict[tuple[int, ...], tuple[np.ndarray, torch.Tensor]] = {}

    def upload(self, image: np.ndarray) -> torch.Tensor:
        """``image`` on the device, the copy finished (in one of ``buffers`` when a spare one has its shape)."""
        views = self.views.get(image.shape)
        if views is None:
            if self.pinned is None or self.pinned.numel() < image.nbytes:
                self.pinned = torch.empty(image.nbytes, dtype=torch.uint8, pin_memory=True)
                self.views.clear()
            staged = self.pinned[: image.nbytes].view(image.shape)
            views = self.views[image.shape] = (staged.numpy(), staged)
        # NumPy's copy: single-threaded and outside the GIL. torch's would start an OpenMP team in
        # every preprocess thread, and those teams fight the decoders for the cores.
        np.copyto(views[0], image)
        frame = self.buffers.take(image.shape)
        with torch.cuda.stream(self.stream):
            if frame is None:
                frame = views[1].to(self.device, non_blocking=True)
            else:
                frame.copy_(views[1], non_blocking=True)
        self.stream.synchronize()  # on the device before it is handed on, and the buffer is free again
        return frame


@dataclass(slots=True)
class _Part:
    """One forward pass of a batch: finished rows, or candidates on their way to the host."""

    members: list[int]
    hw: tuple[int, int]
    rows: list[np.ndarray] | None = None
    host: torch.Tensor | None = None
    """:func:`~engines.postprocess.pack_kept`'s rows (on the host once ``copied`` has fired)."""
    scaled: bool = False
    """``host``'s boxes are in source pixels already (scaled on the device)."""
    copied: torch.cuda.Event | None = None
    proto: torch.Tensor | None = None
    """Segmentation models: the batch's mask prototypes (on the host once ``copied`` has fired)."""
    inputs: list[torch.Tensor] | None = None
    """Upload buffers the batch read, handed back once it has run."""


def frame_size(shape: Sequence[int]) -> tuple[int, int]:
    """Height and width of a frame of ``shape``: ``(H, W, 3)`` BGR, or ``(H * 3 / 2, W)`` I420."""
    if len(shape) == 2:
        return i420_size(int(shape[0]), int(shape[1]))
    return int(shape[0]), int(shape[1])


class _PinnedPool:
    """What a batch borrows, handed back once its result has been read, so a batch allocates none: pinned host
    buffers for the infer thread's device-to-host copies (only the infer thread uses them), the events that mark
    them copied, and (through ``frames``) the upload buffers its frames came in."""

    def __init__(self, frames: _DeviceFrames) -> None:
        self._free: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}
        self._events: list[torch.cuda.Event] = []
        self.frames = frames

    def record(self, stream: torch.cuda.Stream) -> torch.cuda.Event:
        """An event recorded on ``stream`` now."""
        event = self._events.pop() if self._events else torch.cuda.Event()
        event.record(stream)
        return event

    def reuse(self, event: torch.cuda.Event) -> None:
        self._events.append(event)

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """Start copying ``tensor`` into a pinned host buffer on the current stream."""
        free = self._free.get((tuple(tensor.shape), tensor.dtype))
        host = free.pop() if free else torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return host

    def give_back(self, *buffers: torch.Tensor | None) -> None:
        for host in buffers:
            if host is not None:
                self._free.setdefault((tuple(host.shape), host.dtype), []).append(host)


class PendingBatch:
    """A submitted batch. ``result()`` waits for its candidates, runs NMS and maps boxes to source pixels.

    For a segmentation model it also assembles each kept box's mask, after
    which :attr:`masks` holds them (one :class:`InstanceMasks` per image).
    """

    def __init__(
        self,
        parts: list[_Part],
        source_shapes: list[tuple[int, int]],
        nms: NmsSettings,
        pool: _PinnedPool,
        kpt_shape: tuple[int, int] | None = None,
    ) -> None:
        self._pool = pool
        self._parts = parts
        self._shapes = source_shapes
        self._nms = nms
        self._kpt_shape = kpt_shape
        self.masks: list[InstanceMasks] | None = None
        self.keypoints: list[np.ndarray] | None = None

    def result(self) -> list[np.ndarray]:
        out = [np.zeros((0, 6), np.float32)] * len(self._shapes)
        for part in self._parts:
            rows = part.rows
            shapes = [self._shapes[i] for i in part.members]
            if rows is None:
                assert part.host is not None and part.copied is not None
                part.copied.synchronize()
                self._pool.reuse(part.copied)
                rows = unpack_kept(part.host.numpy(), self._nms, part.hw, shapes, part.scaled)
            if part.inputs:  # the batch has run: its upload buffers can take new frames
                self._pool.frames.give_back(part.inputs)
                part.inputs = None
            if part.proto is not None:
                rows = self._with_masks(part, rows)
            if self._kpt_shape is not None:
                self._keypoints(part, rows)
            if part.host is not None:  # the pool's buffers: everything read from them has been copied out
                self._pool.give_back(part.host, part.proto)
            if not part.scaled:
                rows = scale_to_sources(rows, part.hw, shapes)
            for i, r in zip(part.members, rows, strict=True):
                out[i] = r[:, :6]
        return out

    def _keypoints(self, part: _Part, rows: list[np.ndarray]) -> None:
        """Each kept row's keypoints (the columns after box, score, class), in source pixels as Ultralytics does."""
        from ultralytics.utils import ops

        assert self._kpt_shape is not None
        k, d = self._kpt_shape
        if self.keypoints is None:
            self.keypoints = [np.zeros((0, k, 3), np.float32) for _ in self._shapes]
        for i, r in zip(part.members, rows, strict=True):
            kpts = torch.from_numpy(np.ascontiguousarray(r[:, 6 : 6 + k * d])).reshape(len(r), k, d).float()
            kpts = ops.scale_coords(part.hw, kpts, self._shapes[i])
            if d == 2:  # no visibility column: every keypoint counts as seen
                kpts = torch.cat([kpts, torch.ones(len(r), k, 1)], -1)
            self.keypoints[i] = kpts.numpy().astype(np.float32)

    def _with_masks(self, part: _Part, rows: list[np.ndarray]) -> list[np.ndarray]:
        """Assemble the masks of ``part``'s kept rows; like Ultralytics, drop rows whose mask is empty."""
        assert part.proto is not None
        if self.masks is None:
            self.masks = [InstanceMasks(np.zeros((0, *part.hw), np.uint8), s) for s in self._shapes]
        kept = []
        for j, (i, r) in enumerate(zip(part.members, rows, strict=True)):
            data = assemble(part.proto[j].float(), r, part.hw)
            nonempty = data.any(axis=(1, 2))
            self.masks[i] = InstanceMasks(data[nonempty], self._shapes[i])
            kept.append(r[nonempty])
        return kept


def detector_for(
    runner: ModelRunner,
    loaded: LoadedModel,
    spec: ModelSpec,
    *,
    backend: str,
    device: str,
    precision: str,
    artifact: CachedArtifact | None = None,
    fixed_shape: bool = False,
) -> YoloDetector:
    """A :class:`YoloDetector` for an exported model: names, stride and head type come from the loaded module."""
    module = loaded.module
    names = {int(k): str(v) for k, v in module.names.items()}
    info = EngineInfo(
        backend=backend,
        device=device,
        precision=precision,
        model=loaded.name,
        task=loaded.task,
        imgsz=spec.imgsz,
        names=names,
        max_batch=runner.max_batch,
        asynchronous=runner.on_gpu,
        cache=None if artifact is None else ("built" if artifact.built else "hit"),
        artifact=None if artifact is None else str(artifact.path),
    )
    stride = max(int(module.stride.max()), 32)
    end2end = bool(getattr(module, "end2end", False))
    kpt = getattr(module, "kpt_shape", None) if loaded.task == "pose" else None
    return YoloDetector(
        runner,
        info,
        spec,
        stride=stride,
        nc=len(names),
        end2end=end2end,
        fixed_shape=fixed_shape,
        kpt_shape=(int(kpt[0]), int(kpt[1])) if kpt is not None else None,
    )


class YoloDetector:
    """A YOLO detection model behind any runner; implements :class:`~engines.base.DetectionEngine`."""

    def __init__(
        self,
        runner: ModelRunner,
        info: EngineInfo,
        spec: ModelSpec,
        *,
        stride: int,
        nc: int,
        end2end: bool = False,
        fixed_shape: bool = False,
        kpt_shape: tuple[int, int] | None = None,
    ) -> None:
        self.runner = runner
        self._kpt_shape = kpt_shape
        """Pose models: keypoints per box and values per keypoint (17, 3 for COCO)."""
        self.info = info
        self.spec = spec
        self._nc = nc
        self._end2end = end2end
        self._nms = NmsSettings(spec.conf, spec.iou, spec.max_det, spec.classes, spec.agnostic_nms)
        self._frames = _DeviceFrames()
        self._pinned = _PinnedPool(self._frames)
        auto = not fixed_shape
        self._stride, self._auto = stride, auto
        if runner.on_gpu:
            self._device = torch.device("cuda", torch.cuda.current_device())
            self._gpu_letterbox = TorchLetterbox(spec.imgsz, stride, runner.input_dtype, auto=auto)
            self._uploader = _Uploader(self._device, self._frames)
            self._stream = torch.cuda.Stream(self._device)
            self._candidates = max(CANDIDATES, spec.max_det)
            self._classes = None if spec.classes is None else torch.tensor(spec.classes, device=self._device).float()
            fuse = getattr(runner, "fuse", None)
            self._fused = fuse is not None and not end2end
            if fuse is not None and not end2end:
                fuse(self._model_input, self._top)
        else:
            self._cpu_letterbox = CpuLetterbox(spec.imgsz, stride, auto=auto)

    # -- preprocess stage ----------------------------------------------------------------------
    def prepare(self, image: np.ndarray | torch.Tensor, layout: PixelLayout = "bgr") -> np.ndarray | GpuInput:
        """On the host, letterbox one frame to a uint8 ``(3, h, w)`` RGB array; on a GPU, upload it.

        On a GPU the letterbox runs later, in ``infer``, over the whole batch at
        once: the preprocess threads only copy bytes, outside the GIL. An I420
        frame is uploaded as it is (half the bytes of BGR) and converted there,
        in the same CUDA graph as the letterbox. A frame that is a CUDA tensor
        already is taken as it is and must be finished: the batch reads it on
        another stream, so work still queued to make it would race.
        """
        if not self.runner.on_gpu:
            return self._cpu_letterbox(on_host(to_bgr(image, layout)))
        if not isinstance(image, np.ndarray):  # on the GPU and finished (NVDEC, the GPU ring, image operations)
            return GpuInput(image)
        return GpuInput(self._uploader.upload(image), pooled=True)

    # -- infer stage ---------------------------------------------------------------------------
    def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Detections per input: ``(N, 6)`` float32 rows ``x1, y1, x2, y2, confidence, class_id`` in source pixels."""
        return self.submit(inputs, source_shapes).result()

    @torch.inference_mode()
    def submit(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> PendingBatch:
        """Queue a batch; on a GPU this returns before the device has finished (see :class:`PendingBatch`)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(inputs):  # frames of different sizes letterbox to different shapes
            groups.setdefault(tuple(item.shape), []).append(i)
        step = max(1, self.runner.max_batch)
        chunks = [group[start : start + step] for group in groups.values() for start in range(0, len(group), step)]
        parts = [self._launch([inputs[i] for i in chunk], chunk, [source_shapes[i] for i in chunk]) for chunk in chunks]
        return PendingBatch(parts, list(source_shapes), self._nms, self._pinned, self._kpt_shape)

    def _launch(self, items: Sequence[Any], members: list[int], shapes: Sequence[tuple[int, int]]) -> _Part:
        """Forward same-shaped inputs; on a GPU, start copying their kept candidates to pinned host memory."""
        if not self.runner.on_gpu:
            batch = items[0][None] if len(items) == 1 else np.stack(items)
            hw = (int(batch.shape[2]), int(batch.shape[3]))
            outs = self.runner.forward(batch)
            rows = batched_nms(outs[0], self._nms, self._nc, self._end2end)
            return _Part(members, hw, rows=rows, proto=outs[1] if len(outs) > 1 else None)
        stream = self._stream
        with torch.cuda.stream(stream):
            # The inputs are on the device already (see GpuInput), and the in-flight batch holds them until its
            # result() has waited for this stream: no per-frame event waits or record_stream calls here. Each
            # torch call below gives up the GIL and queues to take it back, so there are few of them.
            tensors = [item.tensor for item in items]
            pooled = [item.tensor for item in items if item.pooled]
            source = frame_size(tensors[0].shape)
            g = geometry(*source, self.spec.imgsz, self._stride, self._auto)
            hw = (g.out_h, g.out_w)
            if self._fused:  # stacking, letterbox, model, candidate selection and NMS replayed as one CUDA graph
                packed, *rest = self.runner.run_frames(tensors)  # type: ignore[attr-defined]
            else:
                frames = tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)
                preds, *rest = self.runner.forward(self._model_input(frames))
                if self._end2end:
                    rows = batched_nms(preds, self._nms, self._nc, end2end=True)
                    proto = rest[0].float().cpu() if rest else None
                    return _Part(members, hw, rows=rows, proto=proto, inputs=pooled)
                (packed,) = self._top(preds, tensors[0].shape)
            # Device-to-host copies, queued behind the forward pass on the same stream (so a CUDA graph's
            # outputs are read before the next replay overwrites them); the host only slices the kept rows.
            host = self._pinned.copy(packed)
            proto = self._pinned.copy(rest[0]) if rest else None
            copied = self._pinned.record(stream)
        # Boxes come scaled to the frame's pixels unless masks or keypoints still need them as the model saw them.
        scaled = not rest and self._kpt_shape is None and all(tuple(shape) == source for shape in shapes)
        return _Part(members, hw, host=host, scaled=scaled, copied=copied, proto=proto, inputs=pooled)

    def _model_input(self, frames: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 frames on the GPU (each as :func:`frame_size` describes) letterboxed into the model's
        input."""
        return self._gpu_letterbox(i420_to_bgr_torch(frames) if frames.ndim == 3 else frames)

    def _top(self, preds: torch.Tensor, frame_shape: Sequence[int]) -> tuple[torch.Tensor]:
        """The best candidates of frames of ``frame_shape`` and the ones greedy NMS keeps, ready for the host (see
        :func:`~engines.postprocess.pack_kept`), without leaving the device."""
        cands = top_candidates(preds, self._nc, self._candidates)
        keep = greedy_keep(cands, self._nms, self._classes)
        source = frame_size(frame_shape)
        g = geometry(*source, self.spec.imgsz, self._stride, self._auto)
        return (pack_kept(cands, keep, self._nms.max_det, (g.out_h, g.out_w), source),)

    def warmup(self, formats: Sequence[FrameFormat] = ()) -> None:
        """Run blank frames of each of ``formats`` (the sources' own; 16:9 BGR when none is given) at batch 1, 2,
        4… up to the largest batch, so no real frame waits on a first call.

        On CUDA this also captures the CUDA graphs for those batch buckets, so
        the first batches of real frames replay graphs made for their shape
        instead of capturing them. The upload buffers the blank frames used are
        let go of afterwards: frames that arrive on the GPU never need them.
        """
        default = FrameFormat((self.spec.imgsz * 9 // 16, self.spec.imgsz, 3))
        sizes = {1, self.runner.max_batch} | {b for b in (2, 4, 8, 16, 32) if b < self.runner.max_batch}
        for fmt in dict.fromkeys(formats or [default]):
            blank = np.zeros(fmt.shape, dtype=np.uint8)
            shape = frame_size(fmt.shape)
            for n in sorted(sizes):
                for _ in range(2):
                    self.infer([self.prepare(blank, fmt.layout) for _ in range(n)], [shape] * n)
        self._frames.clear()

    def close(self) -> None:
        self.runner.close()
        if self.runner.on_gpu:
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"YoloDetector({self.info.backend}, {self.info.model}, {self.info.device}, {self.info.precision})"
