"""The pipeline's stage threads: capture (one per stream), preprocess, infer and publish.

Each stage reads typed messages from a bounded queue with a timed wait, checks
the shared stop event, and forwards :class:`~pipeline.messages.EndOfStream`
sentinels so that the end of every stream reaches the publisher. One module
per stage; :mod:`pipeline.stages.base` holds what they share.
"""

from pipeline.stages.base import GET_TIMEOUT_S, FailureHandler, StageClock, StageThread
from pipeline.stages.capture import CaptureStage
from pipeline.stages.infer import InferStage, resolve_classes, to_frame
from pipeline.stages.preprocess import PreprocessStage
from pipeline.stages.publish import LATENCY_WINDOW, PublishStage, StreamAdded, StreamPlan

__all__ = [
    "GET_TIMEOUT_S",
    "LATENCY_WINDOW",
    "CaptureStage",
    "FailureHandler",
    "InferStage",
    "PreprocessStage",
    "PublishStage",
    "StageClock",
    "StageThread",
    "StreamAdded",
    "StreamPlan",
    "resolve_classes",
    "to_frame",
]
