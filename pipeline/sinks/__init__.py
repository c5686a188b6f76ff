"""What happens to a finished frame: sinks that the publish stage feeds in order.

:mod:`~pipeline.sinks.base` holds the interface (``on_result``,
``on_stream_added``, ``poll``, ``on_stream_end``, ``close``) and the set that
isolates one failing sink from the others; :mod:`~pipeline.sinks.bus` the bus
(the one essential sink), :mod:`~pipeline.sinks.faces` the face thread's
side, :mod:`~pipeline.sinks.pictures` recordings, the preview and thumbnails
of redacted frames.
"""

from pipeline.sinks.base import Published, ResultSink, SinkSet, StreamEnding
from pipeline.sinks.bus import BusSink, BusWriter
from pipeline.sinks.faces import FaceSink
from pipeline.sinks.pictures import PictureSink, Redactor, Thumbnailer

__all__ = [
    "BusSink",
    "BusWriter",
    "FaceSink",
    "PictureSink",
    "Published",
    "Redactor",
    "ResultSink",
    "SinkSet",
    "StreamEnding",
    "Thumbnailer",
]
