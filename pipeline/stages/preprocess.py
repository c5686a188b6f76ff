"""The preprocess stage: frames from capture queues become model inputs (image operations, motion gating, upload)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import numpy as np

from engines.base import DetectionEngine
from engines.yuv import to_bgr
from pipeline.ages import FrameAges
from pipeline.imageops import ImageOps, upload
from pipeline.messages import CaptureItem, Frame, PreparedFrame, PreparedItem, SeenImage
from pipeline.motion import MotionGate
from pipeline.queues import BoundedQueue, FanIn, StreamCount
from pipeline.stages.base import GET_TIMEOUT_S, FailureHandler, Observe, QueueStage


class PreprocessStage(QueueStage[Frame, PreparedFrame]):
    """Turns frames from its capture queues into model inputs (letterbox, layout, normalize; upload on a GPU).

    There may be several, each serving a fixed set of streams, so frames of one
    stream keep their order.
    """

    def __init__(
        self,
        inputs: FanIn[CaptureItem],
        engine: DetectionEngine,
        out: BoundedQueue[PreparedItem],
        streams: int | StreamCount,
        stop: threading.Event,
        on_failure: FailureHandler,
        name: str = "preprocess",
        image_ops: Mapping[str, ImageOps] | None = None,
        motion: Mapping[str, MotionGate] | None = None,
        keep_seen: bool = False,
        observe: Observe | None = None,
    ) -> None:
        counted = streams if isinstance(streams, StreamCount) else StreamCount(streams)
        super().__init__(name, inputs, out, counted, stop, on_failure, observe)
        self.inputs = inputs
        """The fan-in over this thread's capture queues (streams added at run time join it)."""
        self.keep_seen = keep_seen
        """Keep the operated-on picture with each frame (secondary models crop from it)."""
        self.motion = dict(motion or {})
        """Per stream: the motion gate that keeps still frames from the model."""
        self.image_ops = dict(image_ops or {})
        """Per stream: image operations before the model (crop, rotate, enhance, …)."""
        info = getattr(engine, "info", None)
        self._ops_device: str | None = None
        """Where host frames are uploaded before their image operations: the GPU the engine takes tensors on."""
        if info is not None and info.backend in ("torch", "tensorrt") and info.device.startswith("cuda"):
            self._ops_device = info.device
        self.engine = engine
        self.ages = FrameAges()
        """How old frames are when this thread takes them from their capture queues."""

    def ready(self) -> bool:
        # Take a frame only when the model's queue has room for it: a frame taken early would wait there,
        # aging, while a live camera's newer frames replace each other in its capture queue.
        return self.out.wait_for_room(GET_TIMEOUT_S)

    def process(self, frame: Frame) -> PreparedFrame:
        self.ages.add(time.time() - frame.captured_at)
        gate = self.motion.get(frame.stream_id)
        if gate is not None and not gate.moving(to_bgr(frame.image, frame.layout), frame.pts_ms):
            return PreparedFrame(frame, None, gated=gate.config.on_still)
        ops = self.image_ops.get(frame.stream_id)
        if ops is None:
            return PreparedFrame(frame, self.engine.prepare(frame.image, frame.layout))
        image = frame.image
        if isinstance(image, np.ndarray) and self._ops_device is not None:
            image = upload(image, self._ops_device)  # the operations run on the GPU the model runs on
        image, warp = ops.run(to_bgr(image, frame.layout))
        shape = (int(image.shape[0]), int(image.shape[1]))
        seen = SeenImage(image, warp.forward) if self.keep_seen else None
        return PreparedFrame(frame, self.engine.prepare(image), shape, warp.back, seen=seen)
