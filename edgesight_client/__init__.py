"""edgesight's bus client: subscribe to a pipeline's ZeroMQ bus and read its messages, typed.

It installs on its own (``pip install ./client``: pyzmq and orjson, no torch, OpenCV or NumPy)::

    from edgesight_client import DetectionsMessage, Subscriber

    with Subscriber("tcp://127.0.0.1:5555", topics=["detections."]) as sub:
        for msg in sub:
            if isinstance(msg, DetectionsMessage):
                print(msg.stream_id, msg.seq, [d.label for d in msg.detections])
"""

from __future__ import annotations

from edgesight_client.curve import CurveClient, generate
from edgesight_client.errors import ConfigError, EdgesightError
from edgesight_client.schema import (
    CountsMessage,
    Detection,
    DetectionsMessage,
    EventMessage,
    Message,
    MessageError,
    StatusMessage,
    decode,
)
from edgesight_client.subscriber import Subscriber
from edgesight_client.validation import schema_for, validate

__all__ = [
    "ConfigError",
    "CountsMessage",
    "CurveClient",
    "Detection",
    "DetectionsMessage",
    "EdgesightError",
    "EventMessage",
    "Message",
    "MessageError",
    "StatusMessage",
    "Subscriber",
    "decode",
    "generate",
    "schema_for",
    "validate",
]
